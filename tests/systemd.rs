//! systemd behaviour without systemd: the test owns the notify socket and
//! checks what the real binary says on it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(port: u16, notify_socket: &str, watchdog_usec: &str) -> Guard {
    let child = Command::new(env!("CARGO_BIN_EXE_pairlink"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", watchdog_usec)
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pairlink");
    Guard(child)
}

/// The next datagram, as text, within `within`.
fn next_message(socket: &UnixDatagram, within: Duration) -> String {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notify message in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// One GET /healthz, no retries: the server must already answer.
fn healthz_once(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200 ") && out.ends_with("ok")
}

fn lifecycle(socket: UnixDatagram, address: &str) {
    let port = free_port();
    let mut server = start(port, address, "200000");
    let ready = next_message(&socket, Duration::from_secs(10));
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first message: {ready:?}"
    );
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "{ready:?}");
    // READY=1 comes only once the listener answers.
    assert!(healthz_once(port), "READY=1 before /healthz answered");

    // WATCHDOG_USEC=200ms: a ping every 100 ms or so; three within 2 s.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "only {pings} watchdog pings in 2 s"
        );
        let m = next_message(&socket, Duration::from_secs(2));
        if m.lines().any(|l| l == "WATCHDOG=1") {
            assert!(m.contains("STATUS=0 sessions"), "{m:?}");
            pings += 1;
        }
    }

    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no STOPPING=1 after SIGTERM");
        let m = next_message(&socket, Duration::from_secs(5));
        if m.lines().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit within 5 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn ready_watchdog_and_stopping_on_a_path_socket() {
    let dir = std::env::temp_dir().join(format!(
        "pairlink-sd-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    lifecycle(socket, path.to_str().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ready_watchdog_and_stopping_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("pairlink-sd-test-{}-{}", std::process::id(), free_port());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    lifecycle(socket, &format!("@{name}"));
}

/// Socket activation: systemd-socket-activate (Debian's systemd package)
/// binds the port, passes it as fd 3 with LISTEN_FDS/LISTEN_PID, and the
/// server serves on it, ignoring --listen.
#[test]
fn serves_on_a_socket_passed_by_systemd() {
    let tool = "/usr/bin/systemd-socket-activate";
    assert!(
        std::path::Path::new(tool).exists(),
        "{tool} is missing: install Debian's systemd package (.ci/run does)"
    );
    let port = free_port();
    // --listen names a port nobody serves, to show it is not used.
    let unused = free_port();
    let child = Command::new(tool)
        .args([
            "-l",
            &format!("127.0.0.1:{port}"),
            env!("CARGO_BIN_EXE_pairlink"),
        ])
        .args(["--listen", &format!("127.0.0.1:{unused}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn systemd-socket-activate");
    let _guard = Guard(child);
    // The tool starts the server on the first connection; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !healthz_once(port) {
        assert!(
            Instant::now() < deadline,
            "no answer on the activated socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", unused)).is_err(),
        "--listen was bound too"
    );
}
