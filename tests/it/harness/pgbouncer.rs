//! A private `pgbouncer` in transaction mode, in front of a PostgreSQL
//! server of the harness: what Supabase's pooler (port 6543) is.

use std::path::PathBuf;
use std::time::Duration;

use super::wait_until;

/// A private `pgbouncer` in transaction mode in front of `server`.
pub struct PgBouncer {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain([PathBuf::from(format!("/usr/sbin/{name}"))])
        .find(|p| p.is_file())
}

/// Database `db` of the server on `pg_port`, as user postgres (trust).
pub async fn start_pgbouncer(pg_port: u16, db: &str) -> PgBouncer {
    use std::os::unix::process::CommandExt as _;
    let binary = find_binary("pgbouncer").unwrap_or_else(|| {
        panic!("pgbouncer not found: install it (Debian/Ubuntu: `apt-get install pgbouncer`)")
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let port = super::free_port();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n{db} = host=127.0.0.1 port={pg_port} dbname={db} user=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {auth}\n\
             pool_mode = transaction\nmax_client_conn = 50\ndefault_pool_size = 2\n\
             server_reset_query =\nlogfile = {log}\npidfile =\n",
            auth = dir.path().join("users.txt").display(),
            log = dir.path().join("pgbouncer.log").display(),
        ),
    )
    .expect("write ini");
    std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").expect("users");
    let mut cmd = std::process::Command::new(binary);
    cmd.arg(&ini)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // pgbouncer refuses to run as root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let nobody = nix_user("nobody");
        std::os::unix::fs::chown(dir.path(), Some(nobody.0), Some(nobody.1)).expect("chown");
        cmd.gid(nobody.1).uid(nobody.0);
    }
    let child = cmd.spawn().expect("spawn pgbouncer");
    let bouncer = PgBouncer {
        port,
        child,
        _dir: dir,
    };
    wait_until(
        "pgbouncer accepts connections",
        Duration::from_secs(10),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    bouncer
}

fn nix_user(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .unwrap_or_else(|| panic!("no OS user {name}"))
}
