//! systemd integration with std alone: `sd_notify` messages over the
//! `NOTIFY_SOCKET` datagram socket (a path, or an abstract name starting
//! with `@`), and the watchdog interval from `WATCHDOG_USEC`.
//!
//! Everything here is a no-op when the process does not run under systemd,
//! so the server calls it unconditionally.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends state changes to the service manager.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
    /// environment.
    pub fn from_env() -> Notifier {
        Notifier::from_vars(|name| std::env::var(name).ok(), std::process::id())
    }

    /// As [`Notifier::from_env`], with the variables and our pid given.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, pid: u32) -> Notifier {
        let target = var("NOTIFY_SOCKET").and_then(|path| match socket_addr(&path) {
            Ok(addr) => match UnixDatagram::unbound() {
                Ok(socket) => Some((socket, addr)),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET: cannot open a datagram socket: {e}");
                    None
                }
            },
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {path:?} is not usable: {e}");
                None
            }
        });
        Notifier {
            target,
            watchdog: watchdog_interval(&var, pid),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the manager's timeout, as
    /// sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=value` lines). A failure is
    /// logged at debug level: the manager going away must not stop serving.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                log::debug!("sd_notify failed: {e}");
            }
        }
    }
}

/// The HTTP listener systemd passed us by socket activation (fd 3, when
/// `LISTEN_PID` is our pid and `LISTEN_FDS` is at least 1), if any.
pub fn activated_listener() -> Option<std::net::TcpListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    let listener = take_fd3();
    // Only a listening TCP socket will do; anything else is a broken unit.
    match listener.local_addr() {
        Ok(_) => Some(listener),
        Err(e) => {
            log::error!("LISTEN_FDS: fd 3 is not a TCP socket ({e}); ignoring it");
            None
        }
    }
}

/// The first passed file descriptor, as sd_listen_fds(3) defines it.
#[allow(unsafe_code)]
fn take_fd3() -> std::net::TcpListener {
    use std::os::fd::FromRawFd;
    const SD_LISTEN_FDS_START: i32 = 3;
    // SAFETY: systemd's socket activation protocol hands this process fd 3,
    // open and owned by no one else, when LISTEN_PID is our pid and
    // LISTEN_FDS >= 1 (checked by the caller); it is taken exactly once.
    unsafe { std::net::TcpListener::from_raw_fd(SD_LISTEN_FDS_START) }
}

/// The address in `NOTIFY_SOCKET`: a filesystem path, or `@name` for a
/// Linux abstract socket.
fn socket_addr(value: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither a path nor @abstract",
        ))
    }
}

/// Half of `WATCHDOG_USEC`, when it is set for this process.
fn watchdog_interval(var: &impl Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    let usec: u64 = var("WATCHDOG_USEC")?
        .trim()
        .parse()
        .ok()
        .filter(|&u| u > 0)?;
    if let Some(for_pid) = var("WATCHDOG_PID") {
        if for_pid.trim().parse::<u32>().ok() != Some(pid) {
            return None; // meant for another process
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn watchdog_interval_is_half_and_for_us_only() {
        let n = Notifier::from_vars(vars(&[("WATCHDOG_USEC", "2000000")]), 7);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        let n = Notifier::from_vars(
            vars(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "7")]),
            7,
        );
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        let n = Notifier::from_vars(
            vars(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "8")]),
            7,
        );
        assert_eq!(n.watchdog_interval(), None);
        for bad in ["", "0", "x", "-5"] {
            let n = Notifier::from_vars(vars(&[("WATCHDOG_USEC", bad)]), 7);
            assert_eq!(n.watchdog_interval(), None, "{bad:?}");
        }
    }

    #[test]
    fn no_socket_is_a_no_op() {
        let n = Notifier::from_vars(vars(&[]), 1);
        assert!(!n.enabled());
        n.notify("READY=1");
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", "relative/path")]), 1);
        assert!(!n.enabled());
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("pairlink-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
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
        let _ = std::fs::remove_dir_all(&dir);
    }

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
        n.notify("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let got = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"WATCHDOG=1");
    }
}
