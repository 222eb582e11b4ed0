//! One bounded request: time, size, redirects, concurrency; failures told
//! apart by kind, with messages that never hold the URL.

use std::time::Duration;

use super::*;

impl HttpSource {
    /// One request, bounded in time and size, within the concurrency bound.
    pub(super) async fn fetch(&self, url: &str) -> Result<Answer, Failure> {
        let _permit = self.limit.acquire().await.map_err(|_| {
            Failure::no_answer(ErrorKind::Other, "not probed: probe limiter closed")
        })?;
        let started = Instant::now();
        let request = async {
            let mut resp = self
                .client
                .request(self.method.clone(), url)
                .headers(self.headers.clone())
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| self.failure(&e))?;
            let code = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if resp
                .content_length()
                .is_some_and(|n| n > self.max_body as u64)
            {
                return Err(Failure::bad_answer(
                    ErrorKind::Protocol,
                    format!("body too large (over {} bytes)", self.max_body),
                ));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.failure(&e))? {
                if body.len() + chunk.len() > self.max_body {
                    return Err(Failure::bad_answer(
                        ErrorKind::Protocol,
                        format!("body too large (over {} bytes)", self.max_body),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                code,
                content_type,
                body,
                elapsed: started.elapsed(),
            })
        };
        // The client's timeout covers the body too; this guard makes sure
        // nothing outlives it by more than a moment.
        match tokio::time::timeout(self.timeout + Duration::from_millis(250), request).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> Failure {
        Failure::no_answer(
            ErrorKind::Timeout,
            format!("no answer within {}", fmt_duration(self.timeout)),
        )
    }

    /// A client error as a kind and a message without the URL.
    fn failure(&self, e: &reqwest::Error) -> Failure {
        let refused = || {
            Failure::no_answer(
                ErrorKind::ConnectionRefused,
                "not reachable: connection refused",
            )
        };
        if e.is_timeout() {
            return self.timed_out();
        }
        if e.is_redirect() {
            return Failure::bad_answer(
                ErrorKind::Protocol,
                format!("too many redirects (more than {MAX_REDIRECTS})"),
            );
        }
        let text = chain(e);
        let lower = text.to_ascii_lowercase();
        let mut src: Option<&dyn std::error::Error> = Some(e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        return refused();
                    }
                    std::io::ErrorKind::TimedOut => return self.timed_out(),
                    _ => {}
                }
            }
            if s.downcast_ref::<rustls::Error>().is_some() {
                return Failure::no_answer(ErrorKind::Tls, format!("not reachable: TLS: {s}"));
            }
            src = s.source();
        }
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            return Failure::no_answer(ErrorKind::Tls, format!("not reachable: TLS: {text}"));
        }
        if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
            return Failure::no_answer(ErrorKind::Dns, format!("not reachable: DNS: {text}"));
        }
        if lower.contains("connection refused") {
            return refused();
        }
        if e.is_body() || e.is_decode() {
            return Failure::bad_answer(ErrorKind::Protocol, format!("bad body: {text}"));
        }
        if e.is_connect() {
            return Failure::no_answer(ErrorKind::Other, format!("not reachable: {text}"));
        }
        Failure::no_answer(ErrorKind::Other, format!("no answer: {text}"))
    }

    pub(super) fn expected(&self, code: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&code)
        } else {
            self.expected_status.contains(&code)
        }
    }
}

pub(super) fn is_json_type(ct: &str) -> bool {
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The error and its causes, without the URL (which may hold a secret).
pub(crate) fn chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    if parts.is_empty() {
        // reqwest's own Display names the URL; without it only the kind is left.
        parts.push(if e.is_connect() {
            "connection failed".into()
        } else if e.is_request() {
            "request failed".into()
        } else {
            "error".into()
        });
    }
    parts.join(": ")
}

/// `2s`, `500ms`, `1.5s`.
pub(super) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("application/json; charset=utf-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/html; charset=utf-8"));
        assert!(!is_json_type(""));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }
}
