//! The listener's accept loop, with the limits axum's `serve` does not
//! have: a cap on open connections, so file descriptors stay free for the
//! datastores and the state files; a header-read timeout (a client that
//! opens a connection and sends nothing, or a header a byte a minute, is
//! dropped), also the idle time of a keep-alive connection; a
//! whole-request timeout (408). At the cap, a new connection takes the
//! place of the oldest one that is not in the middle of a request (idle or
//! still sending its headers), so a flood of idle or slow connections cannot
//! lock Prometheus and the kubelet out; only when every connection is
//! serving a request is the new one closed. At most `max_in_flight`
//! requests are served at once (tower's global concurrency limit); past it
//! a request is shed with a 503 rather than queued. HTTP/1.1 by hyper; shutdown
//! lets requests in flight finish, within a bound.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Bounds of the HTTP server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A request's headers must arrive within this (also the idle time of
    /// a keep-alive connection).
    pub header_read_timeout: Duration,
    /// A request must be answered within this (408 past it).
    pub request_timeout: Duration,
    /// Connections still open at shutdown get this long to finish.
    pub drain: Duration,
    /// Requests being served at once at most; past it a request is answered
    /// 503 with `Retry-After: 1` at once (shed, not queued).
    pub max_in_flight: usize,
}

impl ServerLimits {
    /// The defaults for each of `listeners` listeners, with their
    /// connection caps together within the process's file descriptor
    /// limit: half of what is left after 256 for everything else
    /// (datastore connections, state files, the log), shared out, each at
    /// most 4096 and at least 16.
    pub fn for_this_process(listeners: usize) -> Self {
        let mut limits = Self::default();
        // SAFETY: getrlimit writes into the struct it is given.
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
            let fds = usize::try_from(r.rlim_cur).unwrap_or(usize::MAX);
            limits.max_connections =
                (fds.saturating_sub(256) / 2 / listeners.max(1)).clamp(16, 4096);
        }
        limits
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(5),
            max_in_flight: 256,
        }
    }
}

/// Serve `app` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let app = app
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed))
                .layer(tower::load_shed::LoadShedLayer::new())
                // Global: one count for every route and connection.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    limits.max_in_flight,
                )),
        );
    let open = Arc::new(Open::default());
    let graceful = GracefulShutdown::new();
    let mut refused = 0u64;
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the like: wait a moment
                    // instead of spinning on the error.
                    warn!(error = %e, "Cannot accept a connection.");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let Some(conn_state) = open.admit(next_id, limits.max_connections) else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(
                    max_connections = limits.max_connections,
                    refused, "Every connection is serving a request; closing new ones."
                );
            }
            drop(stream);
            continue;
        };
        let id = next_id;
        next_id += 1;
        let _ = stream.set_nodelay(true);
        let service = Tracked {
            inner: TowerToHyperService::new(app.clone()),
            state: conn_state.clone(),
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let open = open.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(peer = %peer, error = %e, "Connection ended with an error.");
                },
                // Evicted to make room: dropping it closes the socket.
                _ = conn_state.evict.cancelled() => {
                    debug!(peer = %peer, "Idle connection closed to make room.");
                }
            }
            open.remove(id);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("Connections still open after the drain time; closing them.");
    }
}

/// The answer to a request past `max_in_flight`.
async fn shed(_: tower::BoxError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({ "error": "too many requests at once; retry in a second" })),
    )
        .into_response()
}

/// One open connection: whether it is serving a request, and how to close
/// it.
#[derive(Default)]
struct ConnState {
    requests: AtomicUsize,
    evict: CancellationToken,
}

/// The open connections, by accept order.
#[derive(Default)]
struct Open {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Open {
    /// A slot for connection `id`: a free one, or the oldest connection
    /// not serving a request, closed; `None` when every one is busy.
    fn admit(&self, id: u64, max: usize) -> Option<Arc<ConnState>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= max {
            let oldest = conns
                .iter()
                .filter(|(_, c)| c.requests.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)
                .min()?;
            if let Some(c) = conns.remove(&oldest) {
                c.evict.cancel();
            }
        }
        let state = Arc::new(ConnState::default());
        conns.insert(id, state.clone());
        Some(state)
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// The connection's service, counting the requests it is serving.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

/// Decrements the count when the request's future ends, answered or not.
struct InRequest(Arc<ConnState>);

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        self.state.requests.fetch_add(1, Ordering::AcqRel);
        let guard = InRequest(self.state.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::sync::Semaphore;

    use super::*;

    /// Past `max_in_flight`, a request is answered 503 with `Retry-After`
    /// at once instead of waiting; once the held ones finish, requests are
    /// served again.
    #[tokio::test]
    async fn requests_past_the_limit_are_shed_at_once() {
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(Semaphore::new(0));
        let (g, e) = (gate.clone(), entered.clone());
        let app = Router::new()
            .route(
                "/held",
                get(move || {
                    let (g, e) = (g.clone(), e.clone());
                    async move {
                        e.add_permits(1);
                        let _ = g.acquire().await;
                        "done"
                    }
                }),
            )
            .route("/fast", get(|| async { "ok" }));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let limits = ServerLimits {
            max_in_flight: 2,
            ..ServerLimits::default()
        };
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, limits, cancel.clone()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let held: Vec<_> = (0..2)
            .map(|_| tokio::spawn(client.get(format!("{base}/held")).send()))
            .collect();
        tokio::time::timeout(Duration::from_secs(10), entered.acquire_many(2))
            .await
            .expect("both held requests reach their handler")
            .unwrap()
            .forget();

        let r = client.get(format!("{base}/fast")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("too many"), "{v}");

        gate.add_permits(2);
        for h in held {
            assert_eq!(h.await.unwrap().unwrap().status(), StatusCode::OK);
        }
        let r = client.get(format!("{base}/fast")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        cancel.cancel();
        server.await.unwrap();
    }
}
