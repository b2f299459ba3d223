//! systemd integration with std alone: `sd_notify` messages over the
//! `NOTIFY_SOCKET` datagram socket (a path, or an abstract name starting
//! with `@`), the watchdog interval from `WATCHDOG_USEC`, and the HTTP
//! listener passed by socket activation (`LISTEN_FDS`).
//!
//! Everything here is a no-op when the process does not run under systemd,
//! so the server calls it unconditionally. Nothing here panics: a manager
//! that went away or a malformed variable is logged, and serving goes on.
//!
//! `sd_notify(3)` and `sd_listen_fds(3)` can also *unset* their variables,
//! so that child processes do not talk to the manager in the parent's name.
//! We leave them set, on purpose: pairlink starts no child process, and by
//! the time the notifier is built the smol runtime has started threads, and
//! changing the environment while other threads may read it (glibc's
//! resolver does) is a data race; that is why `std::env::remove_var` is
//! `unsafe` from Rust 2024 on. The unit's `NotifyAccess=main` makes the
//! manager ignore any other process anyway, and `LISTEN_PID` names us only.

use std::cell::Cell;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Longest a notification may wait for room in the manager's queue. A
/// healthy manager drains it at once; one that does not is stuck, and the
/// message is dropped (and logged) rather than stalling every connection on
/// the event loop. A lost `WATCHDOG=1` is sent again half a timeout later.
pub const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// Shortest interval between two `WATCHDOG=1`, however small
/// `WATCHDOG_USEC` is: a zero interval would make the pinging task spin.
pub const WATCHDOG_INTERVAL_MIN: Duration = Duration::from_millis(1);

/// The first file descriptor passed by socket activation (`sd_listen_fds(3)`).
const SD_LISTEN_FDS_START: i32 = 3;

/// Sends state changes to the service manager.
#[derive(Debug)]
pub struct Notifier {
    /// Our own unbound socket and the manager's address; `None` when
    /// `NOTIFY_SOCKET` is unset or unusable.
    target: Option<(UnixDatagram, SocketAddr)>,
    /// How often to ping the watchdog; `None` when no watchdog is set for us.
    watchdog: Option<Duration>,
    /// Whether a send already failed: the first failure is a warning, the
    /// rest are debug lines, so a vanished manager does not flood the log
    /// every watchdog interval.
    failed: Cell<bool>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
    /// environment. Never fails: a bad value is logged as a warning and
    /// leaves that part disabled.
    pub fn from_env() -> Notifier {
        Notifier::from_vars(|name| std::env::var(name).ok(), std::process::id())
    }

    /// As [`Notifier::from_env`], with the variables and our pid given.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, pid: u32) -> Notifier {
        let target = var("NOTIFY_SOCKET")
            .filter(|value| !value.is_empty())
            .and_then(|value| match open(&value) {
                Ok(target) => Some(target),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET {value:?} is not usable: {e}");
                    None
                }
            });
        Notifier {
            target,
            watchdog: watchdog_interval(&var, pid),
            failed: Cell::new(false),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the manager's timeout, as
    /// `sd_watchdog_enabled(3)` advises, and at least
    /// [`WATCHDOG_INTERVAL_MIN`]. `None` when no watchdog is set for this
    /// process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=value` lines, e.g.
    /// `"READY=1\nSTATUS=serving"`). Waits at most [`NOTIFY_SEND_TIMEOUT`].
    /// A failure is logged, once as a warning and then at debug level: the
    /// manager going away must not stop serving.
    pub fn notify(&self, state: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            if self.failed.replace(true) {
                log::debug!("sd_notify failed again: {e}");
            } else {
                log::warn!("sd_notify failed: {e}; later failures are logged at debug level");
            }
        }
    }
}

/// Our end of the notification socket, and the manager's address.
fn open(value: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = socket_addr(value)?;
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(NOTIFY_SEND_TIMEOUT))?;
    Ok((socket, addr))
}

/// The address in `NOTIFY_SOCKET`: a filesystem path, or `@name` for a
/// Linux abstract socket.
fn socket_addr(value: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        abstract_addr(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor @abstract",
        ))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// Half of `WATCHDOG_USEC`, when it is set for this process.
fn watchdog_interval(var: &impl Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    let text = var("WATCHDOG_USEC").filter(|t| !t.is_empty())?;
    let Some(usec) = text.trim().parse::<u64>().ok().filter(|&u| u > 0) else {
        log::warn!("WATCHDOG_USEC {text:?} is not a positive number; no watchdog pings");
        return None;
    };
    if let Some(for_pid) = var("WATCHDOG_PID").filter(|t| !t.is_empty()) {
        if for_pid.trim().parse::<u32>().ok() != Some(pid) {
            return None; // set for another process (we were started by one)
        }
    }
    Some(Duration::from_micros(usec / 2).max(WATCHDOG_INTERVAL_MIN))
}

/// The HTTP listener systemd passed us by socket activation, if any: fd 3,
/// when `LISTEN_PID` is our pid and `LISTEN_FDS` is at least 1. Further
/// passed fds are ignored (the unit passes one). Returns `None`, with an
/// error logged, when fd 3 turns out not to be a TCP socket.
pub fn activated_listener() -> Option<std::net::TcpListener> {
    let count = listen_fds(|name| std::env::var(name).ok(), std::process::id())?;
    if count > 1 {
        log::warn!("LISTEN_FDS={count}: only fd 3 is used, as the HTTP listener");
    }
    let listener = take_fd3();
    // Only a TCP socket has an inet address; anything else is a broken unit.
    match listener.local_addr() {
        Ok(_) => Some(listener),
        Err(e) => {
            log::error!("LISTEN_FDS: fd 3 is not a TCP socket ({e}); ignoring it");
            None
        }
    }
}

/// How many fds were passed to *this* process, per `sd_listen_fds(3)`.
fn listen_fds(var: impl Fn(&str) -> Option<String>, pid: u32) -> Option<u32> {
    let for_pid: u32 = var("LISTEN_PID")?.trim().parse().ok()?;
    let count: u32 = var("LISTEN_FDS")?.trim().parse().ok()?;
    (for_pid == pid && count >= 1).then_some(count)
}

/// The first passed file descriptor, as `sd_listen_fds(3)` defines it. One
/// of the crate's two `unsafe` lines (see `lib.rs`): std has no safe way to
/// adopt an inherited fd.
#[allow(unsafe_code)]
fn take_fd3() -> std::net::TcpListener {
    use std::os::fd::FromRawFd;
    // SAFETY: the socket activation protocol hands this process fd 3, open
    // and owned by nothing else in it, when LISTEN_PID is our pid and
    // LISTEN_FDS >= 1 (checked by the only caller, once, at start-up).
    unsafe { std::net::TcpListener::from_raw_fd(SD_LISTEN_FDS_START) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    /// Environment variables as `(name, value)` pairs.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    fn vars(pairs: Vars<'_>) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn watchdog_interval_is_half_and_for_us_only() {
        let table: &[(Vars, Option<Duration>)] = &[
            (
                &[("WATCHDOG_USEC", "2000000")],
                Some(Duration::from_secs(1)),
            ),
            (
                &[("WATCHDOG_USEC", " 200000\n")],
                Some(Duration::from_millis(100)),
            ),
            (
                &[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "7")],
                Some(Duration::from_secs(1)),
            ),
            (
                &[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "")],
                Some(Duration::from_secs(1)),
            ),
            (&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "8")], None),
            (&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "x")], None),
            (&[("WATCHDOG_USEC", "1")], Some(WATCHDOG_INTERVAL_MIN)),
            (&[("WATCHDOG_PID", "7")], None),
            (&[("WATCHDOG_USEC", "")], None),
            (&[("WATCHDOG_USEC", "0")], None),
            (&[("WATCHDOG_USEC", "x")], None),
            (&[("WATCHDOG_USEC", "-5")], None),
            (&[("WATCHDOG_USEC", "99999999999999999999999")], None),
            (&[], None),
        ];
        for (pairs, want) in table {
            let n = Notifier::from_vars(vars(pairs), 7);
            assert_eq!(n.watchdog_interval(), *want, "{pairs:?}");
        }
    }

    #[test]
    fn listen_fds_are_for_us_only() {
        let table: &[(Vars, Option<u32>)] = &[
            (&[("LISTEN_PID", "7"), ("LISTEN_FDS", "1")], Some(1)),
            (&[("LISTEN_PID", "7"), ("LISTEN_FDS", "2")], Some(2)),
            (&[("LISTEN_PID", "8"), ("LISTEN_FDS", "1")], None),
            (&[("LISTEN_PID", "7"), ("LISTEN_FDS", "0")], None),
            (&[("LISTEN_PID", "7"), ("LISTEN_FDS", "-1")], None),
            (&[("LISTEN_PID", "7"), ("LISTEN_FDS", "")], None),
            (&[("LISTEN_PID", "x"), ("LISTEN_FDS", "1")], None),
            (&[("LISTEN_FDS", "1")], None),
            (&[("LISTEN_PID", "7")], None),
            (&[], None),
        ];
        for (pairs, want) in table {
            assert_eq!(listen_fds(vars(pairs), 7), *want, "{pairs:?}");
        }
    }

    #[test]
    fn no_socket_is_a_no_op() {
        for pairs in [
            &[][..],
            &[("NOTIFY_SOCKET", "")],
            &[("NOTIFY_SOCKET", "relative/path")],
        ] {
            let n = Notifier::from_vars(vars(pairs), 1);
            assert!(!n.enabled(), "{pairs:?}");
            n.notify("READY=1");
        }
        let too_long = format!("/{}", "x".repeat(200));
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", &too_long)]), 1);
        assert!(!n.enabled());
    }

    /// A temporary directory removed when the test ends, however it ends.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("pairlink-notify-{tag}-{}", std::process::id()));
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

    #[test]
    fn sends_to_a_path_socket() {
        let dir = TempDir::new("path");
        let path = dir.0.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", path.to_str().unwrap())]), 1);
        assert!(n.enabled());
        n.notify("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let got = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1\nSTATUS=ok");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pairlink-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", &format!("@{name}"))]), 1);
        assert!(n.enabled());
        n.notify("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let got = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"WATCHDOG=1");
    }

    #[test]
    fn a_vanished_manager_is_only_logged() {
        let dir = TempDir::new("gone");
        let path = dir.0.join("notify.sock");
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", path.to_str().unwrap())]), 1);
        assert!(n.enabled());
        n.notify("READY=1"); // nobody listens: ENOENT
        assert!(n.failed.get());
        n.notify("WATCHDOG=1");
    }

    #[test]
    fn a_manager_that_does_not_read_does_not_stall_us() {
        let dir = TempDir::new("full");
        let path = dir.0.join("notify.sock");
        let _server = UnixDatagram::bind(&path).unwrap(); // never reads
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", path.to_str().unwrap())]), 1);
        // The receive queue holds net.unix.max_dgram_qlen (512 by default)
        // datagrams or its buffer's worth; past that a send waits for the
        // timeout and fails. Bounded: at most 4096 sends.
        let state = "WATCHDOG=1\n".repeat(64);
        for _ in 0..4096 {
            n.notify(&state);
            if n.failed.get() {
                break;
            }
        }
        assert!(n.failed.get(), "the queue never filled");
        let started = Instant::now();
        n.notify(&state);
        let waited = started.elapsed();
        assert!(
            waited >= NOTIFY_SEND_TIMEOUT / 2 && waited < NOTIFY_SEND_TIMEOUT * 10,
            "a send to a full queue took {waited:?}"
        );
    }
}
