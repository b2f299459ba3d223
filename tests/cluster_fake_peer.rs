//! A peer that knows the cookie, played by the test with the library's own
//! sans-IO connection (`PeerConn`), against the real binary: what a node
//! does with frames that arrive on a connection a newer one has replaced.
//!
//! The node under test is `n2`; its one configured peer `n1` points at a
//! port nobody listens on, and since `n1` sorts lower, only `n1` dials: every
//! connection claiming to be `n1` here is the test's.

mod common;

use common::*;
use pairlink::cluster::conn::{ConnEvent, PeerConn};
use pairlink::cluster::frame::{encode, Claim, Frame, Handle, NONCE_BYTES};
use pairlink::cluster::handshake::Role;
use pairlink::proto::ids::{parse_node_name, parse_pair, Side};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bound on every wait for the node.
const WAIT: Duration = Duration::from_secs(5);
const COOKIE: &str = "fake-peer-cookie-0123456789abcdef";

/// One connection of the fake `n1` to the node.
struct FakePeer {
    s: TcpStream,
    conn: PeerConn,
    started: Instant,
}

impl FakePeer {
    /// Connects and completes the handshake as `n1`.
    fn connect(addr: SocketAddr, nonce_byte: u8) -> FakePeer {
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the cluster port");
        s.set_nodelay(true).unwrap();
        let conn = PeerConn::new(
            0,
            Role::Dialer,
            parse_node_name("n1").unwrap(),
            COOKIE.as_bytes().to_vec(),
            [nonce_byte; NONCE_BYTES],
            Some(parse_node_name("n2").unwrap()),
            60_000,
        );
        let mut p = FakePeer {
            s,
            conn,
            started: Instant::now(),
        };
        p.flush();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no handshake within {WAIT:?}");
            let up = p
                .read_events(Duration::from_millis(100))
                .into_iter()
                .any(|e| matches!(e, ConnEvent::Up { .. }));
            p.flush();
            if up {
                return p;
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Writes what the connection has queued.
    fn flush(&mut self) {
        let out = self.conn.take_transmit();
        self.s.write_all(&out).expect("write to the node");
    }

    /// Reads for up to `within` (one read, or none if nothing comes) and
    /// returns the events it gave.
    fn read_events(&mut self, within: Duration) -> Vec<ConnEvent> {
        self.s.set_read_timeout(Some(within)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = match self.s.read(&mut buf) {
            Ok(0) => panic!("the node closed the connection"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(e) => panic!("read from the node: {e}"),
        };
        let now = self.now_ms();
        self.conn
            .handle_bytes(now, &buf[..n], &|_| true)
            .expect("the node's bytes are well-formed");
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Frames received within `within`.
    fn frames_within(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            for e in self.read_events(left.min(Duration::from_millis(50))) {
                if let ConnEvent::Frame(f) = e {
                    frames.push(f);
                }
            }
            self.flush(); // Pongs for the node's Pings
        }
        frames
    }
}

/// The process's CPU time so far, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name, which ends at the last ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Waits (at most 20 s) until `pid` has used no CPU for 300 ms.
fn wait_quiet(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = cpu_ticks(pid);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = cpu_ticks(pid);
        if now == last {
            return;
        }
        assert!(Instant::now() < deadline, "the node stayed busy for 20 s");
        last = now;
    }
}

fn lookup(req: u64) -> Frame {
    Frame::Lookup {
        req,
        pair: parse_pair("fake-pair").unwrap(),
        side: Side::A,
        claim: Claim {
            handle: Handle { key: 7, gen: 1 },
            hlc: 1,
        },
    }
}

fn raw(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode(frame, &mut out);
    out
}

fn start_n2() -> (Server, SocketAddr) {
    let cookie = scratch_directory().join("cookie");
    write_cookie(&cookie, COOKIE);
    let cluster_port = free_port();
    let nobody = free_port();
    let server = Server::start(&[
        "--node",
        "n2",
        "--cluster-listen",
        &format!("127.0.0.1:{cluster_port}"),
        "--peer",
        &format!("n1=127.0.0.1:{nobody}"),
        "--cookie-file",
        cookie.to_str().unwrap(),
        "--heartbeat",
        "5s",
    ]);
    (server, format!("127.0.0.1:{cluster_port}").parse().unwrap())
}

#[test]
fn a_fake_peer_that_knows_the_cookie_gets_lookups_answered() {
    // The harness itself: without this, the test below could pass because
    // the fake peer never worked.
    let (_server, addr) = start_n2();
    let mut p = FakePeer::connect(addr, 1);
    p.conn.send(&lookup(41)).unwrap();
    p.flush();
    let frames = p.frames_within(Duration::from_millis(1500));
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::LookupReply { req: 41, .. })),
        "no LookupReply: {frames:?}"
    );
}

#[test]
fn frames_on_a_replaced_connection_are_not_handed_to_the_node() {
    let (server, addr) = start_n2();
    // Connection A: authenticated, then made to hold its writer blocked: a
    // flood of Pings whose Pongs A never reads fills the socket buffers,
    // so A's writer waits in a write while its reader keeps reading.
    let mut a = FakePeer::connect(addr, 1);
    let mut pings = Vec::new();
    for seq in 0..300_000u64 {
        encode(&Frame::Ping { hlc: 1, seq }, &mut pings);
    }
    a.s.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    a.s.write_all(&pings).expect("send the Pings");
    // Sent is not yet read: wait until the node has taken them all in (its
    // CPU time stops moving), so its writer for A is the one blocked.
    wait_quiet(server.pid());
    // Connection B replaces A.
    let mut b = FakePeer::connect(addr, 2);
    // A Lookup on A, after B is up. The node must not take it: A's peer
    // went down and came back as B, so nothing read on A counts any more.
    a.s.write_all(&raw(&lookup(42)))
        .expect("send a Lookup on A");
    // A Lookup on B, which must be answered, marks how long is enough.
    b.conn.send(&lookup(43)).unwrap();
    b.flush();
    let frames = b.frames_within(Duration::from_millis(1500));
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::LookupReply { req: 43, .. })),
        "B's own Lookup unanswered: {frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Frame::LookupReply { req: 42, .. })),
        "a Lookup read on the replaced connection was answered on the new one"
    );
    server.assert_serving();
}
