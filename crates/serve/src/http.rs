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

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let ready = state.app().is_some_and(|a| a.all_ready());
    if ready {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
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

/// Serves HTTP on `listener` until the process ends.
pub async fn run(listener: TcpListener, state: Arc<HttpState>) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!("the HTTP server stopped: {e}");
    }
}
