//! A network namespace joined to this one by a veth pair: a client in it
//! reaches this host from a non-loopback address of its own, as another pod
//! or machine would. Needs `ip` (iproute2) and the rights to make
//! namespaces (root); without them the test fails, saying so.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace `ns` whose address `peer` reaches this host at `host`;
/// deleted (with its end of the pair, which takes the other) on drop.
pub struct NetNs {
    pub name: String,
    /// This host's address on the pair.
    pub host: String,
    /// The namespace's address.
    pub peer: String,
    host_if: String,
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

impl NetNs {
    pub fn new() -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are at most 15 bytes.
        let tag = format!("{:x}{n}", pid % 0x10000);
        let name = format!("as-test-{pid}-{n}");
        let host_if = format!("ash{tag}");
        let peer_if = format!("asp{tag}");
        // A /30 of 10.231.0.0/16 per namespace (pid and counter pick it).
        let block = ((pid % 4000) * 4 + n * 4) % 65536;
        let (b2, b3) = (block / 256, block % 256);
        let host = format!("10.231.{b2}.{}", b3 + 1);
        let peer = format!("10.231.{b2}.{}", b3 + 2);
        ip(&["netns", "add", &name]);
        let ns = NetNs {
            name,
            host,
            peer,
            host_if,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ns.exec_ip(&["addr", "add", &format!("{}/30", ns.peer), "dev", &peer_if]);
        ns.exec_ip(&["link", "set", &peer_if, "up"]);
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// `program args` run inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
