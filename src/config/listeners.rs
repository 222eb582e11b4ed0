//! `listen`, `admin_listen` and `read_token`: who can reach what.
//!
//! Two listeners. `listen` (default `0.0.0.0:9464`) serves what Prometheus,
//! the kubelet and people read: `/metrics`, `/healthz`, `/readyz` and
//! `GET /api/v1/*` (behind `read_token` when it is set). `admin_listen`
//! (default `127.0.0.1:9465`, `false` for none) serves everything that
//! changes state — pushed heartbeats and silence writes — and the reads as
//! well. On loopback only the pod (or the host, under PM2) reaches it; on
//! any other address the tokens of what it serves are required, and a
//! config without them is rejected with each missing token named.

use std::net::{IpAddr, SocketAddr};

use secrecy::SecretString;

use super::walk::{Obj, Problems};
use super::{SourceConfig, SourceKindConfig, index, walk};

/// The listeners of a config.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// `/metrics`, `/healthz`, `/readyz`, `GET /api/v1/*`.
    pub listen: SocketAddr,
    /// Push and silence writes (and the reads); `None`: not served.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for `GET /api/v1/*` on both listeners, if set.
    pub read_token: Option<SecretString>,
}

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9464);
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9465);

pub(super) fn parse(root: &mut Obj<'_>, p: &mut Problems) -> Option<Listeners> {
    let listen = match root.string("listen", p) {
        None => Some(DEFAULT_LISTEN),
        Some(s) => address(&s, "listen", p),
    };
    let admin_listen = match root.get("admin_listen") {
        None => Some(Some(DEFAULT_ADMIN_LISTEN)),
        Some(serde_json::Value::Bool(false)) => Some(None),
        Some(v) => walk::as_string(v, &root.at("admin_listen"), p)
            .and_then(|s| address(&s, "admin_listen", p))
            .map(Some),
    };
    let read_token = root
        .string("read_token", p)
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    let (listen, admin_listen) = (listen?, admin_listen?);
    if let Some(admin) = admin_listen
        && admin.port() != 0
        && admin.port() == listen.port()
        && (admin.ip() == listen.ip()
            || admin.ip().is_unspecified()
            || listen.ip().is_unspecified())
    {
        p.add(
            "admin_listen",
            format!("`{admin}` overlaps listen `{listen}`: use another port"),
        );
    }
    Some(Listeners {
        listen,
        admin_listen,
        read_token,
    })
}

fn address(s: &str, key: &str, p: &mut Problems) -> Option<SocketAddr> {
    match s.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(key, format!("`{s}` is not an address like 127.0.0.1:9465"));
            None
        }
    }
}

/// Whether only this host (this pod) can connect to `addr`.
pub fn is_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// What the admin listener exposes needs a token unless it is on loopback;
/// a push source needs the admin listener. `api_token` is the silence
/// API's token (checked only when the alerting sections are read).
pub(super) fn check(
    l: &Listeners,
    sources: &[SourceConfig],
    api_token: Option<&Option<SecretString>>,
    p: &mut Problems,
) {
    let pushes = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.kind {
            SourceKindConfig::Push(push) => Some((i, s, push)),
            _ => None,
        });
    let Some(admin) = l.admin_listen else {
        for (i, s, _) in pushes {
            p.add(
                index("sources", i),
                format!(
                    "push source `{}` needs admin_listen, where its endpoint is served",
                    s.name
                ),
            );
        }
        return;
    };
    if is_loopback(admin) {
        return;
    }
    for (i, s, push) in pushes {
        if push.token.is_none() {
            p.add(
                walk::join(&index("sources", i), "token"),
                format!(
                    "required: admin_listen `{admin}` is not a loopback address, and without a \
                     token anyone who reaches it could push heartbeats for source `{}`",
                    s.name
                ),
            );
        }
    }
    if let Some(None) = api_token {
        p.add(
            "api_token",
            format!(
                "required: admin_listen `{admin}` is not a loopback address, and without a \
                 token anyone who reaches it could add and remove silences"
            ),
        );
    }
}

/// One line per listener: where, what it serves, and who may use it
/// (`check-config` prints them).
pub fn describe(c: &super::Config) -> Vec<String> {
    let l = &c.listeners;
    let token = |set: bool| if set { "token" } else { "no token" };
    let reach = |a: SocketAddr| {
        if is_loopback(a) {
            "loopback: this host or pod only"
        } else {
            "reachable from the network"
        }
    };
    let mut lines = vec![format!(
        "listen {} ({}): /metrics, /healthz, /readyz; GET /api/v1/* ({})",
        l.listen,
        reach(l.listen),
        if l.read_token.is_some() {
            "read_token"
        } else {
            "open"
        }
    )];
    match l.admin_listen {
        None => lines.push("admin_listen off: no push, no silence writes".into()),
        Some(a) => {
            let mut what: Vec<String> = c
                .sources
                .iter()
                .filter_map(|s| match &s.kind {
                    SourceKindConfig::Push(push) => Some(format!(
                        "push to `{}` ({})",
                        s.name,
                        token(push.token.is_some())
                    )),
                    _ => None,
                })
                .collect();
            what.push(format!(
                "silence writes ({})",
                token(c.alerting.api_token.is_some())
            ));
            lines.push(format!(
                "admin_listen {a} ({}): {}; the reads",
                reach(a),
                what.join(", ")
            ));
        }
    }
    lines
}
