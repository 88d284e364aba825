//! A PgBouncer of the test's own in transaction mode, in front of the PostgreSQL test server:
//! the pooler production puts between contractd and the database. It listens on a free
//! loopback port with a configuration written into a temporary directory, lends at most
//! [`SERVER_CONNECTIONS`] server connections per database (so client connections really do
//! share them), and is stopped when dropped.
//!
//! The program is `CONTRACTD_TEST_PGBOUNCER` if set, else `pgbouncer` on the `PATH` or
//! `/usr/sbin/pgbouncer` (Debian's package). A test that needs it fails, never skips, when it
//! is missing or does not start.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::postgres_admin_url;

/// Server connections PgBouncer opens per (database, user): fewer than a contractd process's
/// pool, so that client connections take turns on them.
pub const SERVER_CONNECTIONS: u32 = 3;

/// A running PgBouncer, stopped when dropped.
pub struct PgBouncer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Holds the configuration; removed when dropped.
    _dir: TempDir,
}

/// The PgBouncer program to run.
fn program() -> PathBuf {
    if let Some(path) = std::env::var_os("CONTRACTD_TEST_PGBOUNCER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pgbouncer"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"))
}

/// Whether this process runs as root (PgBouncer refuses to: it is then told to switch to the
/// `postgres` user).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgBouncer {
    /// Start one in front of the test server; panics (with PgBouncer's own words) when it is
    /// not installed or does not answer within 15 s.
    pub fn start() -> PgBouncer {
        let server = url::Url::parse(&postgres_admin_url()).expect("CONTRACTD_TEST_POSTGRES_URL");
        let host = server.host_str().unwrap_or("127.0.0.1").to_string();
        let server_port = server.port().unwrap_or(5432);
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
            listener.local_addr().expect("local address").port()
        };
        // PgBouncer reads its files as the user it switches to when started as root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("cannot open the temporary directory to PgBouncer");
        // Trust lets in only the users its auth file lists: the test server's.
        let user = match server.username() {
            "" => "postgres",
            user => user,
        };
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n")).expect("cannot write users.txt");
        let ini = dir.path().join("pgbouncer.ini");
        let settings = format!(
            "[databases]\n\
             * = host={host} port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             pool_mode = transaction\n\
             default_pool_size = {SERVER_CONNECTIONS}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits\n\
             server_check_delay = 0\n\
             log_connections = 0\n\
             log_disconnections = 0\n",
            users = users.display()
        );
        std::fs::write(&ini, settings).expect("cannot write pgbouncer.ini");
        let program = program();
        let mut command = Command::new(&program);
        if running_as_root() {
            command.arg("-u").arg("postgres");
        }
        let mut child = command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start PgBouncer ({}): {error}; install it (Debian: apt-get install \
                     pgbouncer) or point CONTRACTD_TEST_PGBOUNCER at it",
                    program.display()
                )
            });
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for pgbouncer") {
                let mut log = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut log);
                }
                panic!(
                    "PgBouncer ({}) exited at start ({status}):\n{log}",
                    program.display()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("PgBouncer did not listen on 127.0.0.1:{port} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its log goes to stderr; keep reading it so that it never blocks on a full pipe.
        if let Some(mut stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = stderr.read_to_end(&mut sink);
            });
        }
        PgBouncer {
            child,
            port,
            _dir: dir,
        }
    }

    /// `database_url` (a database on the test server) as reached through this PgBouncer.
    pub fn url(&self, database_url: &str) -> String {
        let mut url = url::Url::parse(database_url).expect("a database URL");
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(self.port)).expect("a port");
        url.to_string()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
