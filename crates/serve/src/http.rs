//! The HTTP side, on axum: KServe v2 REST (`rest.rs`), `/metrics` (OpenMetrics text, `metrics.rs`), `/healthz` (the process
//! is up) and `/readyz` (models loaded and serving).

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::server::AppState;

/// What the HTTP handlers read: the service's state, replaced once models are loaded (before,
/// a state with no models, which is not ready).
pub struct HttpState {
    pub app: RwLock<Arc<AppState>>,
}

impl HttpState {
    fn app(&self) -> Option<Arc<AppState>> {
        self.app.read().ok().map(|a| a.clone())
    }
}

fn text(code: StatusCode, body: &'static str) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    match state.app() {
        Some(a) => (
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            a.metrics.render(),
        )
            .into_response(),
        None => text(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n"),
    }
}

/// `ready` or `not ready`, then a line per served model version naming its device.
async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let Some(app) = state.app() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    };
    let ready = app.all_ready();
    let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
    for m in app.models() {
        body.push_str(&format!("{} {}: {}\n", m.name, m.version, m.worker.description));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The router: KServe's REST API (`rest.rs`) beside the probes and metrics; unknown paths
/// answer 404, other methods on known paths 405.
pub fn router(state: Arc<HttpState>) -> Router {
    let max_body = state.app().map_or(64 << 20, |a| a.max_message_bytes);
    Router::new()
        .merge(crate::rest::routes(max_body))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// How the HTTP side listens.
#[derive(Clone)]
pub struct Listen {
    /// TLS (the gRPC side's certificate and key), or plain HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long a client may take for its TLS handshake and each request's headers (an idle
    /// keep-alive connection's next request included) before its connection is closed: a
    /// slow or idle client holds no connection forever.
    pub header_timeout: std::time::Duration,
}

/// A TLS acceptor for HTTP/1.1 from PEM certificate chain and private key.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<tokio_rustls::TlsAcceptor, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the TLS certificate: {e}"))?;
    if certs.is_empty() {
        return Err("the TLS certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the TLS key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves HTTP/1.1 (keep-alive) on `listener` until the process ends, each connection on
/// its own task.
pub async fn run(listener: TcpListener, state: Arc<HttpState>, listen: Listen) {
    let app = router(state);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // out of file descriptors and the like: wait, do not spin
                tracing::warn!("accepting an HTTP connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, listen) = (app.clone(), listen.clone());
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(listen.header_timeout);
            let served = match listen.tls {
                Some(acceptor) => match tokio::time::timeout(listen.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => http.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                },
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }
}
