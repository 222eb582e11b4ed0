//! A real webhook receiver on 127.0.0.1: records every request, answers
//! 200 (or, when told to, another status and a `Retry-After` to the next
//! few), and can be away (connection refused) and come back on its port.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::harness::wait_until;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Whether it was answered 2xx.
    pub accepted: bool,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no header {name} in {:?}", self.headers))
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Request>,
    /// Answers for the next requests (status, `Retry-After`); 200 after.
    answers: VecDeque<(StatusCode, Option<String>)>,
}

pub struct Receiver {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    stop: Option<CancellationToken>,
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let mut g = inner.lock().unwrap();
    let (status, retry_after) = g.answers.pop_front().unwrap_or((StatusCode::OK, None));
    let accepted = status.is_success();
    g.requests.push(Request {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: body.to_vec(),
        accepted,
        at: std::time::Instant::now(),
    });
    let mut answer = HeaderMap::new();
    if let Some(v) = retry_after {
        answer.insert("retry-after", v.parse().unwrap());
    }
    (status, answer)
}

impl Receiver {
    /// Listening on a free port.
    pub async fn start() -> Receiver {
        let mut r = Receiver {
            port: 0,
            inner: Arc::default(),
            stop: None,
        };
        r.listen(0).await;
        r
    }

    /// A receiver that is not listening yet (connections are refused) on a
    /// port reserved for it; [`Receiver::resume`] starts it.
    pub fn gone() -> Receiver {
        Receiver {
            port: crate::harness::free_port(),
            inner: Arc::default(),
            stop: None,
        }
    }

    async fn listen(&mut self, port: u16) {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        self.port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/", post(record))
            .route("/{*path}", post(record))
            .with_state(self.inner.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .unwrap();
        });
        self.stop = Some(stop);
    }

    /// Start listening again on the same port.
    pub async fn resume(&mut self) {
        self.listen(self.port).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer 503 to the next `n` requests.
    pub fn refuse_next(&self, n: usize) {
        self.answer_next(n, 503, None);
    }

    /// Answer `status` (with `Retry-After: retry_after`, if given) to the
    /// next `n` requests.
    pub fn answer_next(&self, n: usize, status: u16, retry_after: Option<&str>) {
        let status = StatusCode::from_u16(status).unwrap();
        let mut g = self.inner.lock().unwrap();
        for _ in 0..n {
            g.answers
                .push_back((status, retry_after.map(str::to_string)));
        }
    }

    /// Forget the answers set with [`Self::answer_next`]: accept again.
    pub fn answer_normally(&self) {
        self.inner.lock().unwrap().answers.clear();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Poll until at least `n` requests arrived; returns them all.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Request> {
        wait_until(
            &format!("{n} request(s) on port {}", self.port),
            timeout,
            || async { self.requests().len() >= n },
        )
        .await;
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = &self.stop {
            s.cancel();
        }
    }
}
