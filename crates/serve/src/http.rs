//! The HTTP side: `/metrics` (OpenMetrics text, `metrics.rs`), `/healthz` (the process is up) and
//! `/readyz` (models loaded and serving). A deliberately small HTTP/1.1 responder.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::server::AppState;

pub struct HttpState {
    pub app: RwLock<Arc<AppState>>,
}

pub async fn run(listener: TcpListener, state: Arc<HttpState>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            // read until the end of the request head (or the buffer is full)
            let head_done = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    match sock.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => {
                            len += n;
                            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
                                return true;
                            }
                        }
                    }
                }
            })
            .await
            .unwrap_or(false);
            if !head_done {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let app = state.app.read().map(|a| a.clone()).ok();
            let (code, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
                ("GET", "/metrics") => match &app {
                    Some(a) => ("200 OK", crate::metrics::CONTENT_TYPE, a.metrics.render()),
                    None => ("503 Service Unavailable", "text/plain", "starting\n".into()),
                },
                ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
                ("GET", "/readyz") => {
                    let ready = app.as_ref().is_some_and(|a| {
                        a.ready.load(Ordering::SeqCst)
                            && !a.models.is_empty()
                            && a.models.iter().all(|m| m.worker.ready.load(Ordering::SeqCst))
                    });
                    if ready {
                        ("200 OK", "text/plain", "ready\n".into())
                    } else {
                        ("503 Service Unavailable", "text/plain", "not ready\n".into())
                    }
                }
                ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
                _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
