//! A TCP fault proxy on 127.0.0.1 for the fault suite: it forwards to one
//! upstream and, as told, adds latency, stops forwarding (a hung peer),
//! holds only the answers (a request that reached its server but whose
//! reply never comes back), or resets every connection (RST, not FIN).
//! A mode applies to the connections already open as well as to new ones.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does with the bytes it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward both ways, each chunk this much later.
    Delay(Duration),
    /// Accept and read, forward nothing either way: a peer that hangs.
    Blackhole,
    /// Forward requests, hold the answers.
    HoldReplies,
    /// Reset every open connection, and each new one as it arrives.
    Reset,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Listening on a free port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Pass);
        let stop = CancellationToken::new();
        let modes = mode.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = s.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((client, _)) = conn else { continue };
                let rx = modes.subscribe();
                tokio::spawn(serve(client, upstream, rx, s.clone()));
            }
        });
        FaultProxy { addr, mode, stop }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `host:port` to put in a URL in place of the upstream's.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Close with RST: linger 0, then drop.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    stop: CancellationToken,
) {
    if *mode.borrow_and_update() == Mode::Reset {
        return reset(client);
    }
    let server = tokio::select! {
        _ = stop.cancelled() => return,
        s = TcpStream::connect(upstream) => match s {
            Ok(s) => s,
            // The upstream is down: the client sees it as a reset.
            Err(_) => return reset(client),
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up_mode = mode.clone();
    let up = pump(&mut cr, &mut sw, up_mode, false);
    let down = pump(&mut sr, &mut cw, mode.clone(), true);
    let reset_now = async {
        loop {
            if *mode.borrow_and_update() == Mode::Reset {
                return;
            }
            if mode.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = async { tokio::join!(up, down) } => {}
        _ = reset_now => {}
    }
    // Dropping the halves closes both sides; on Reset, with RST.
    if *mode.borrow() == Mode::Reset {
        if let (Ok(c), Ok(s)) = (cr.reunite(cw), sr.reunite(sw)) {
            reset(c);
            reset(s);
        }
    }
}

/// Copy `from` to `to` chunk by chunk, as the mode says; `reply` is the
/// server-to-client direction.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    reply: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Wait while this direction is held; the chunk goes on when the
        // mode lets it (or never, if the connection is reset meanwhile).
        loop {
            let m = *mode.borrow_and_update();
            let held = match m {
                Mode::Blackhole => true,
                Mode::HoldReplies => reply,
                Mode::Reset => return,
                Mode::Pass | Mode::Delay(_) => false,
            };
            if !held {
                if let Mode::Delay(d) = m {
                    tokio::time::sleep(d).await;
                }
                break;
            }
            if mode.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
