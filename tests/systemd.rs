//! systemd behaviour without systemd: the test owns the notify socket and
//! checks what the real binary says on it, when, and how it stops; socket
//! activation goes through `systemd-socket-activate`; and the example
//! `systemd/pairlink.env` is checked against `--help` and run.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pairlink");

/// A temporary directory removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pairlink-sd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server. Dropping it kills the process, however the test ends,
/// and a failing test also prints the server's stderr.
struct Server {
    child: Child,
    stderr: PathBuf,
}

impl Server {
    /// Starts `program` with `args` and `envs`, stderr to `dir/stderr`, and
    /// no inherited systemd variables.
    fn start(program: &str, args: &[&str], envs: &[(&str, &str)], dir: &TempDir) -> Server {
        let stderr = dir.0.join("stderr");
        let mut command = Command::new(program);
        command.args(args);
        for name in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ] {
            command.env_remove(name);
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Server { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// The exit status, within `within`.
    fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "no exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server stderr ---\n{}---", self.stderr());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next datagram, as text, or `None` when none comes within `within`.
fn next_message(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv on the notify socket: {e}"),
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

/// Messages until one has `line`, within `within`; panics otherwise.
fn wait_for_line(socket: &UnixDatagram, line: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {line} within {within:?}");
        if let Some(m) = next_message(socket, left) {
            if has_line(&m, line) {
                return m;
            }
        }
    }
}

/// One GET /healthz, no retries: the server must already answer.
fn healthz_once(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200 ") && out.ends_with("ok")
}

/// /healthz, retried every 20 ms for at most `within`.
fn healthz_within(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while !healthz_once(port) {
        assert!(
            Instant::now() < deadline,
            "no /healthz answer within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The full life of a node under a (fake) manager listening on `socket`,
/// which the node knows as `address`.
fn lifecycle(socket: UnixDatagram, address: &str) {
    let dir = TempDir::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server::start(
        BIN,
        &["--listen", &listen],
        &[("NOTIFY_SOCKET", address), ("WATCHDOG_USEC", "200000")],
        &dir,
    );

    let ready = next_message(&socket, Duration::from_secs(10)).expect("READY=1 within 10 s");
    assert!(has_line(&ready, "READY=1"), "first message: {ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=0 sessions")),
        "{ready:?}"
    );
    // READY=1 comes only once the listener is bound: one try must do.
    assert!(healthz_once(port), "READY=1 before /healthz answered");

    // WATCHDOG_USEC=200ms: a ping every 100 ms, each with a STATUS= line;
    // three must come within 2 s.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let left = Duration::from_secs(2).saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "only {pings} watchdog pings in 2 s");
        let Some(m) = next_message(&socket, left) else {
            continue;
        };
        assert!(!has_line(&m, "READY=1"), "READY=1 sent twice: {m:?}");
        if has_line(&m, "WATCHDOG=1") {
            assert!(
                m.lines().any(|l| l.starts_with("STATUS=0 sessions")),
                "{m:?}"
            );
            pings += 1;
        }
    }

    server.sigterm();
    let stopping = wait_for_line(&socket, "STOPPING=1", Duration::from_secs(5));
    assert!(stopping.contains("STATUS="), "{stopping:?}");
    let exit = server.exit_within(Duration::from_secs(5));
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn ready_watchdog_and_stopping_on_a_path_socket() {
    let dir = TempDir::new();
    let path = dir.0.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    lifecycle(socket, path.to_str().unwrap());
}

#[test]
fn ready_watchdog_and_stopping_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("pairlink-sd-test-{}-{}", std::process::id(), free_port());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    lifecycle(socket, &format!("@{name}"));
}

/// `WATCHDOG_PID` names another process (we were started by one that the
/// watchdog is for): READY=1 and STOPPING=1 still come, pings do not.
#[test]
fn a_watchdog_for_another_process_is_not_pinged() {
    let dir = TempDir::new();
    let path = dir.0.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let mut server = Server::start(
        BIN,
        &["--listen", &format!("127.0.0.1:{port}")],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "100000"),
            ("WATCHDOG_PID", "1"),
        ],
        &dir,
    );
    let ready = next_message(&socket, Duration::from_secs(10)).expect("READY=1 within 10 s");
    assert!(has_line(&ready, "READY=1"), "{ready:?}");
    // Pings would come every 50 ms; none may come in 500 ms.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(m) = next_message(&socket, left) {
            assert!(
                !has_line(&m, "WATCHDOG=1"),
                "pinged another's watchdog: {m:?}"
            );
        }
    }
    server.sigterm();
    wait_for_line(&socket, "STOPPING=1", Duration::from_secs(5));
    let exit = server.exit_within(Duration::from_secs(5));
    assert!(exit.success(), "exit status {exit}");
}

/// A manager that is not there: the node serves and stops as usual, and
/// says so once in its log, not at every watchdog tick.
#[test]
fn an_unusable_notify_socket_is_logged_once() {
    let dir = TempDir::new();
    let missing = dir.0.join("nobody-listens-here");
    let port = free_port();
    let mut server = Server::start(
        BIN,
        &["--listen", &format!("127.0.0.1:{port}")],
        &[
            ("NOTIFY_SOCKET", missing.to_str().unwrap()),
            ("WATCHDOG_USEC", "100000"),
        ],
        &dir,
    );
    healthz_within(port, Duration::from_secs(10));
    // About ten watchdog ticks, each failing.
    std::thread::sleep(Duration::from_millis(500));
    assert!(healthz_once(port));
    server.sigterm();
    let exit = server.exit_within(Duration::from_secs(5));
    assert!(exit.success(), "exit status {exit}");
    let log = server.stderr();
    assert_eq!(log.matches("sd_notify failed").count(), 1, "{log}");

    // A value that is no address at all is reported at start-up.
    let dir = TempDir::new();
    let port = free_port();
    let mut server = Server::start(
        BIN,
        &["--listen", &format!("127.0.0.1:{port}")],
        &[("NOTIFY_SOCKET", "not/absolute")],
        &dir,
    );
    healthz_within(port, Duration::from_secs(10));
    server.sigterm();
    let exit = server.exit_within(Duration::from_secs(5));
    assert!(exit.success(), "exit status {exit}");
    let log = server.stderr();
    assert!(
        log.contains("NOTIFY_SOCKET \"not/absolute\" is not usable"),
        "{log}"
    );
}

/// Socket activation: `systemd-socket-activate` (Debian's systemd package)
/// binds the port and, on the first connection, execs the server with the
/// socket as fd 3 and LISTEN_FDS/LISTEN_PID set. The server serves on it,
/// ignores --listen, and still notifies the manager.
#[test]
fn serves_on_a_socket_passed_by_systemd() {
    let tool = "/usr/bin/systemd-socket-activate";
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: install Debian's systemd package (.ci/run does)"
    );
    let dir = TempDir::new();
    let notify = dir.0.join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let port = free_port();
    // --listen names a port nobody serves, to show it is not used.
    let unused = free_port();
    let mut server = Server::start(
        tool,
        &[
            "-l",
            &format!("127.0.0.1:{port}"),
            "-E",
            &format!("NOTIFY_SOCKET={}", notify.to_str().unwrap()),
            BIN,
            "--listen",
            &format!("127.0.0.1:{unused}"),
        ],
        &[],
        &dir,
    );
    // The tool binds first and starts the server on the first connection.
    healthz_within(port, Duration::from_secs(10));
    let ready = wait_for_line(&socket, "READY=1", Duration::from_secs(5));
    assert!(ready.contains("STATUS="), "{ready:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", unused)).is_err(),
        "--listen was bound too"
    );
    assert!(
        server.stderr().contains("using the socket systemd passed"),
        "{}",
        server.stderr()
    );
    // The tool exec'd the server in its own process: SIGTERM drains it.
    server.sigterm();
    wait_for_line(&socket, "STOPPING=1", Duration::from_secs(5));
    let exit = server.exit_within(Duration::from_secs(5));
    assert!(exit.success(), "exit status {exit}");
}

/// `PAIRLINK_*` assignments of `systemd/pairlink.env`, commented-out
/// examples included: `(name, value, commented)`.
fn env_file_assignments() -> Vec<(String, String, bool)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pairlink.env");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let (body, commented) = match line.strip_prefix('#') {
            Some(rest) => (rest.trim_start(), true),
            None => (line, false),
        };
        let Some((name, value)) = body.split_once('=') else {
            assert!(commented || line.trim().is_empty(), "odd line {line:?}");
            continue;
        };
        if !name.starts_with("PAIRLINK_") {
            assert!(commented, "odd line {line:?}");
            continue;
        }
        assert!(
            name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "odd name in {line:?}"
        );
        // Plain values only: systemd's quoting and escapes are not needed.
        assert!(
            !value.is_empty() && !value.contains(['"', '\'', '\\', '$', ' ']),
            "odd value in {line:?}"
        );
        out.push((name.to_string(), value.to_string(), commented));
    }
    out
}

/// The example settings name every option, and nothing else (a misspelt
/// variable would be silently ignored), and every value in them, the
/// commented cluster and CORS examples included, is accepted.
#[test]
fn the_env_file_lists_every_option_and_its_values_work() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let mut want: Vec<String> = help
        .lines()
        .filter_map(|l| l.strip_prefix("  --"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|flag| match flag {
            "peer" => "PAIRLINK_PEERS".to_string(),
            flag => format!("PAIRLINK_{}", flag.to_uppercase().replace('-', "_")),
        })
        .collect();
    assert!(want.len() >= 16, "{help}");
    want.sort();
    let assignments = env_file_assignments();
    let mut have: Vec<String> = assignments.iter().map(|(n, _, _)| n.clone()).collect();
    have.sort();
    assert_eq!(have, want, "systemd/pairlink.env against --help");

    // Run with all of them. Flags beat variables, so the addresses can be
    // made local and free, and the cookie one the test owns.
    let dir = TempDir::new();
    let cookie = dir.0.join("cookie");
    std::fs::write(&cookie, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = free_port();
    let envs: Vec<(&str, &str)> = assignments
        .iter()
        .map(|(n, v, _)| (n.as_str(), v.as_str()))
        .collect();
    let mut server = Server::start(
        BIN,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster-listen",
            "127.0.0.1:0",
            "--cookie-file",
            cookie.to_str().unwrap(),
        ],
        &envs,
        &dir,
    );
    healthz_within(port, Duration::from_secs(10));
    server.sigterm();
    let exit = server.exit_within(Duration::from_secs(5));
    assert!(exit.success(), "exit status {exit}");
}
