//! The cluster as API.md §3 fixes it, with 3 real `pairlink` processes on
//! 127.0.0.1: cross-node pairing and relay, requests sent to a node that is
//! not the session's home, simultaneous joins, two claims to one side, a
//! node killed (`kill -9`), stopped (`SIGSTOP`/`SIGCONT`), restarted,
//! drained (`SIGTERM`), a node with a wrong cookie, garbage on a cluster
//! port, `/v1/cluster` and the cluster's metrics.
//!
//! Every test starts its own nodes on its own ports (they run in parallel),
//! every loop is bounded in count and time, every socket has timeouts, and
//! every process is killed by its guard, also when a test fails (the guard
//! then prints each node's stderr under the node's name).

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Bound on every node of a cluster seeing all its peers `up`.
const CLUSTER_UP_WITHIN: Duration = Duration::from_secs(10);
/// Whole-cluster start attempts (a port picked as free may be taken by
/// another test before our node binds it).
const START_TRIES_MAX: u32 = 5;
/// The heartbeat of most tests: keeps silence detection and backoff fast.
const FAST_HEARTBEAT: &str = "200ms";
/// API.md §3: peers of a killed node hear `node_down` within 1 s.
const KILL_BOUND_MS: u128 = 1000;
/// Slack added to the contract's bounds for the test's own measurement: the
/// poll's answer crossing loopback and two busy cores scheduling processes.
const LATENCY_SLACK_MS: u128 = 300;
/// A join waits for the lookups on every up node at most this long.
const LOOKUP_DEADLINE_MS: u128 = 1000;

// ---------------------------------------------------------------------------
// A cluster of real processes
// ---------------------------------------------------------------------------

/// One peer as `/v1/cluster` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PeerView {
    node: String,
    addr: String,
    state: String,
}

/// `GET /v1/cluster`, checked strictly.
#[derive(Clone, Debug)]
struct ClusterView {
    node: String,
    /// Sorted by node name.
    peers: Vec<PeerView>,
}

impl ClusterView {
    fn state_of(&self, peer: &str) -> &str {
        &self
            .peers
            .iter()
            .find(|p| p.node == peer)
            .unwrap_or_else(|| panic!("peer {peer} missing from {self:?}"))
            .state
    }
}

fn cluster_view(server: &Server) -> ClusterView {
    let r = server.get("/v1/cluster");
    let j = assert_json(&r, 200);
    assert_eq!(j.keys(), vec!["node", "peers"], "/v1/cluster keys: {r:?}");
    let mut peers: Vec<PeerView> = j
        .arr("peers")
        .iter()
        .map(|p| {
            assert_eq!(
                p.keys(),
                vec!["addr", "node", "state"],
                "/v1/cluster peer keys: {r:?}"
            );
            let state = p.str("state").to_string();
            assert!(
                ["up", "down", "connecting"].contains(&state.as_str()),
                "peer state out of up|down|connecting: {r:?}"
            );
            PeerView {
                node: p.str("node").to_string(),
                addr: p.str("addr").to_string(),
                state,
            }
        })
        .collect();
    peers.sort();
    ClusterView {
        node: j.str("node").to_string(),
        peers,
    }
}

/// Nodes `n1..nN` on loopback, each with its HTTP and cluster port, every
/// other node as a `--peer`, and a cookie file of mode 0600.
struct Cluster {
    names: Vec<String>,
    http_ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    /// The running process of each node (`None` after a kill, until restart).
    nodes: Vec<Option<Server>>,
    /// Processes killed or exited, kept so that their stderr is printed
    /// when the test fails.
    gone: Vec<(String, Server)>,
    /// Options every node gets.
    args: Vec<String>,
    /// The cookie file of each node.
    cookies: Vec<PathBuf>,
    dir: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes with these options and waits until every node sees
    /// every peer `up`.
    fn start(n: usize, args: &[&str]) -> Cluster {
        Cluster::start_with(n, args, None)
    }

    /// As [`Cluster::start`]; node `wrong_cookie` (if any) gets a cookie of
    /// its own, and only the others are awaited `up` (among themselves).
    fn start_with(n: usize, args: &[&str], wrong_cookie: Option<usize>) -> Cluster {
        let mut last_error = String::new();
        for _ in 0..START_TRIES_MAX {
            let dir = scratch_directory();
            let good = dir.join("cookie");
            let bad = dir.join("cookie-other");
            let seed = format!(
                "{:016x}{:08x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64,
                std::process::id()
            );
            write_cookie(&good, &format!("cluster-cookie-{seed}\n"));
            write_cookie(&bad, &format!("another-cookie-{seed}\n"));
            let ports = free_ports(2 * n);
            let mut c = Cluster {
                names: (1..=n).map(|i| format!("n{i}")).collect(),
                http_ports: ports[..n].to_vec(),
                cluster_ports: ports[n..].to_vec(),
                nodes: Vec::new(),
                gone: Vec::new(),
                args: args.iter().map(|s| s.to_string()).collect(),
                cookies: (0..n)
                    .map(|i| {
                        if Some(i) == wrong_cookie {
                            bad.clone()
                        } else {
                            good.clone()
                        }
                    })
                    .collect(),
                dir,
            };
            let mut failed = None;
            for i in 0..n {
                match Server::try_start_on(c.http_ports[i], &c.node_args(i)) {
                    Ok(s) => c.nodes.push(Some(s)),
                    Err(e) => {
                        failed = Some(format!("node {}: {e}", c.names[i]));
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                last_error = e;
                continue;
            }
            let awaited: Vec<usize> = (0..n).filter(|&i| Some(i) != wrong_cookie).collect();
            match c.try_wait_up(&awaited, CLUSTER_UP_WITHIN) {
                Ok(()) => {}
                Err(e) => {
                    // A node that died lost a bind race: start over on other
                    // ports. All alive and still not up is a real failure.
                    if c.nodes.iter_mut().flatten().all(|s| s.is_running()) {
                        panic!("{e}");
                    }
                    last_error = e;
                    continue;
                }
            }
            return c;
        }
        panic!("cluster did not start after {START_TRIES_MAX} tries: {last_error}");
    }

    fn node_args(&self, i: usize) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--node".into(),
            self.names[i].clone(),
            "--cluster-listen".into(),
            format!("127.0.0.1:{}", self.cluster_ports[i]),
            "--cookie-file".into(),
            self.cookies[i].to_string_lossy().into_owned(),
        ];
        for j in 0..self.names.len() {
            if j != i {
                a.push("--peer".into());
                a.push(format!("{}={}", self.names[j], self.peer_addr(j)));
            }
        }
        a.extend(self.args.iter().cloned());
        a
    }

    /// Node `j`'s cluster address, as given in `--peer`.
    fn peer_addr(&self, j: usize) -> String {
        format!("127.0.0.1:{}", self.cluster_ports[j])
    }

    fn node(&self, i: usize) -> &Server {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.names[i]))
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    fn view(&self, i: usize) -> ClusterView {
        cluster_view(self.node(i))
    }

    /// Waits until each node of `which` sees every other node of `which` up.
    fn try_wait_up(&self, which: &[usize], within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let mut missing = Vec::new();
            for &i in which {
                let v = self.view(i);
                if v.node != self.name(i) {
                    // Another test's node took this port between our
                    // choosing it and binding it (ours then failed to
                    // start): `start_with` tries other ports.
                    return Err(format!(
                        "port {} is served by {:?}, not {}",
                        self.http_ports[i],
                        v.node,
                        self.name(i)
                    ));
                }
                for &j in which {
                    let up = v
                        .peers
                        .iter()
                        .any(|p| p.node == self.name(j) && p.state == "up");
                    if j != i && !up {
                        missing.push(format!("{}: {:?}", self.name(i), v.peers));
                        break;
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "cluster not all up within {within:?}: {}",
                    missing.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every running node sees every other running node up.
    fn wait_all_up(&self, within: Duration) {
        let which: Vec<usize> = (0..self.names.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        if let Err(e) = self.try_wait_up(&which, within) {
            panic!("{e}");
        }
    }

    /// Waits until node `i` sees peer `j` in a state other than `up`;
    /// returns that state.
    fn wait_not_up(&self, i: usize, j: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let v = self.view(i);
            let state = v.state_of(self.name(j)).to_string();
            if state != "up" {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{} still sees {} up {within:?} after it went away: {v:?}",
                self.name(i),
                self.name(j)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `kill -9` node `i`.
    fn kill9(&mut self, i: usize) {
        let mut s = self.nodes[i].take().expect("node running");
        s.kill_hard();
        self.gone.push((self.names[i].clone(), s));
    }

    /// Starts node `i` again on the same ports with the same options.
    fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "restart of a running node");
        let mut last = String::new();
        for _ in 0..3 {
            match Server::try_start_on(self.http_ports[i], &self.node_args(i)) {
                Ok(s) => {
                    self.nodes[i] = Some(s);
                    return;
                }
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!("node {} did not restart: {last}", self.names[i]);
    }

    /// Sends a signal by name to node `i`.
    fn signal(&self, i: usize, name: &str) {
        self.node(i).signal(name);
    }

    fn all_stderr(&self) -> String {
        let mut out = String::new();
        for s in self.nodes.iter().flatten() {
            out.push_str(&s.stderr());
        }
        for (_, s) in &self.gone {
            out.push_str(&s.stderr());
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        // A stopped node is killed too (SIGKILL works on stopped processes).
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            if let Some(s) = slot.take() {
                if panicking {
                    eprintln!(
                        "==== node {} (http {}, cluster {}) ====",
                        self.names[i], self.http_ports[i], self.cluster_ports[i]
                    );
                }
                drop(s);
            }
        }
        for (name, s) in self.gone.drain(..) {
            if panicking {
                eprintln!("==== node {name}, earlier process (killed or exited) ====");
            }
            drop(s);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Calls on a given node
// ---------------------------------------------------------------------------

fn join_raw_at(s: &Server, pair: &str, side: &str, token: Option<&str>) -> Response {
    let mut c = s.conn();
    join_raw(&mut c, pair, side, token)
}

/// A join at node `s` that must create a session there (201).
fn join_at(s: &Server, home: &str, pair: &str, side: &str) -> Joined {
    let r = join_raw_at(s, pair, side, None);
    let j = check_join(&r, 201, pair, side);
    assert_token_shape(&j.token, home);
    j
}

fn poll_raw_at(s: &Server, j: &Joined, query: &str) -> Response {
    let mut c = s.conn();
    poll_raw(&mut c, &j.pair, &j.side, &j.token, query)
}

fn poll_at(s: &Server, j: &Joined, after: u64, timeout_ms: u64) -> Poll {
    let mut c = s.conn();
    poll(&mut c, j, after, timeout_ms)
}

/// Writes a poll on a fresh connection and returns it, unanswered.
fn start_poll(s: &Server, j: &Joined, after: u64, timeout_ms: u64) -> Conn {
    let mut c = s.conn();
    write_poll(
        &mut c,
        &j.pair,
        &j.side,
        &j.token,
        &format!("after={after}&timeout_ms={timeout_ms}"),
    );
    c
}

fn send_raw_at(s: &Server, j: &Joined, data: &[u8], key: Option<&str>) -> Response {
    let mut c = s.conn();
    send_raw(&mut c, j, data, key)
}

fn send_at(s: &Server, j: &Joined, data: &str) {
    assert_accepted(&send_raw_at(s, j, data.as_bytes(), None));
}

fn leave_raw_at(s: &Server, j: &Joined) -> Response {
    let mut c = s.conn();
    leave_raw(&mut c, &j.pair, &j.side, &j.token)
}

/// Polls at `s` from `after` until `expected.len()` events came (bounded by
/// `within`), then checks them and that no further event is pending.
/// Returns the `peer` of the last answer.
fn expect_events(
    s: &Server,
    j: &Joined,
    after: u64,
    expected: &[Event],
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    let mut got: Vec<Event> = Vec::new();
    let mut cursor = after;
    let mut peer = String::new();
    for _ in 0..100 {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if got.len() >= expected.len() {
            0
        } else {
            left.as_millis().min(5000) as u64
        };
        let p = poll_at(s, j, cursor, wait);
        peer = p.peer.clone();
        for e in p.events {
            if e.seq() > cursor {
                cursor = e.seq();
                got.push(e);
            }
        }
        if got.len() >= expected.len() && wait == 0 {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    assert_eq!(
        got,
        expected,
        "events of {}/{} (home {}) polled at {} after {after}",
        j.pair,
        j.side,
        home(j),
        s.addr
    );
    peer
}

/// The node a token names as its home.
fn home(j: &Joined) -> &str {
    j.token.split('.').next().unwrap()
}

/// The token with another secret (same shape, same home).
fn wrong_secret(token: &str) -> String {
    let (head, secret) = token.rsplit_once('.').unwrap();
    let first = secret.as_bytes()[0];
    let other = if first == b'A' { 'B' } else { 'A' };
    format!("{head}.{other}{}", &secret[1..])
}

/// Reads a waiting poll's answer; returns it and the time since `since`.
fn finish_poll(c: &mut Conn, since: Instant) -> (Response, u128) {
    let r = c.read_response();
    (r, ms_since(since))
}

/// Asserts that every node of `which` answers /healthz.
fn assert_all_serving(c: &Cluster, which: &[usize]) {
    for &i in which {
        c.node(i).assert_serving();
    }
}

/// A message both ways between `a` (polled at `sa`) and `b` (at `sb`);
/// `a_seq`/`b_seq` are the seqs the sessions have reached.
fn relay_both_ways(
    sa: &Server,
    a: &Joined,
    a_seq: u64,
    sb: &Server,
    b: &Joined,
    b_seq: u64,
    tag: &str,
) {
    let to_b = format!("{tag}: a to b");
    send_at(sa, a, &to_b);
    expect_events(
        sb,
        b,
        b_seq,
        &[msg(b_seq + 1, &to_b)],
        Duration::from_secs(3),
    );
    let to_a = format!("{tag}: b to a");
    send_at(sb, b, &to_a);
    expect_events(
        sa,
        a,
        a_seq,
        &[msg(a_seq + 1, &to_a)],
        Duration::from_secs(3),
    );
}

fn metric(m: &Metrics, name: &str, labels: &str) -> f64 {
    m.value(name, labels)
        .unwrap_or_else(|| panic!("metric {name}{{{labels}}} missing"))
}

// ---------------------------------------------------------------------------
// /v1/cluster
// ---------------------------------------------------------------------------

#[test]
fn cluster_view_lists_every_peer_with_its_address_and_state() {
    let mut c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    for i in 0..3 {
        let v = c.view(i);
        assert_eq!(v.node, c.name(i));
        let mut expected: Vec<PeerView> = (0..3)
            .filter(|&j| j != i)
            .map(|j| PeerView {
                node: c.name(j).to_string(),
                addr: c.peer_addr(j),
                state: "up".into(),
            })
            .collect();
        expected.sort();
        assert_eq!(v.peers, expected, "/v1/cluster of {}", c.name(i));
    }
    c.kill9(2);
    for i in 0..2 {
        let state = c.wait_not_up(i, 2, Duration::from_secs(2));
        assert!(state == "down" || state == "connecting", "{state}");
        let v = c.view(i);
        assert_eq!(v.state_of(c.name(1 - i)), "up", "{v:?}");
        assert_eq!(
            v.peers.iter().find(|p| p.node == "n3").unwrap().addr,
            c.peer_addr(2),
            "a down peer keeps its --peer address: {v:?}"
        );
    }
    assert_all_serving(&c, &[0, 1]);
}

// ---------------------------------------------------------------------------
// Pairing and relay across nodes
// ---------------------------------------------------------------------------

#[test]
fn cross_node_pairing_and_relay_in_both_directions() {
    let c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));

    // a on n1 waits; b joins on n3 and a's waiting poll wakes with peer_online.
    let a = join_at(n1, "n1", "x1", "a");
    assert_eq!(a.peer, "offline");
    let mut wa = start_poll(n1, &a, 0, 5000);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let b = join_at(n3, "n3", "x1", "b");
    assert_eq!(b.peer, "online", "b must find a on n1 at join");
    let (r, ms) = finish_poll(&mut wa, t);
    let p = parse_poll(&r);
    assert_eq!(p.events, vec![Event::Online(1)], "{r:?}");
    assert_eq!(p.peer, "online");
    assert!(
        ms < 2000,
        "a's waiting poll answered {ms} ms after b joined"
    );
    assert_eq!(
        expect_events(n3, &b, 0, &[Event::Online(1)], Duration::from_secs(3)),
        "online"
    );

    // a -> b and b -> a, each polled at its home node.
    send_at(n1, &a, "hello b");
    expect_events(n3, &b, 1, &[msg(2, "hello b")], Duration::from_secs(3));
    send_at(n3, &b, "hello a");
    expect_events(n1, &a, 1, &[msg(2, "hello a")], Duration::from_secs(3));

    // A waiting poll on the other node is woken by the message.
    let mut wb = start_poll(n3, &b, 2, 5000);
    std::thread::sleep(Duration::from_millis(100));
    send_at(n1, &a, "wake up");
    let p = parse_poll(&wb.read_response());
    assert_eq!(p.events, vec![msg(3, "wake up")]);

    // Text that needs JSON escaping, and a large message, cross intact.
    let tricky = "quote \" backslash \\ newline \n tab \t é ✓ 🎉 \u{1}";
    send_at(n1, &a, tricky);
    let big: String = "é-0123456789".repeat(65536 / 13 - 10);
    assert!(big.len() <= 65536);
    send_at(n1, &a, &big);
    send_at(n1, &a, "");
    expect_events(
        n3,
        &b,
        3,
        &[msg(4, tricky), msg(5, &big), msg(6, "")],
        Duration::from_secs(3),
    );

    // An idempotency key is honoured across the link: delivered once.
    for _ in 0..3 {
        assert_accepted(&send_raw_at(n3, &b, b"once", Some("key-1")));
    }
    expect_events(n1, &a, 2, &[msg(3, "once")], Duration::from_secs(3));

    // The reverse order: b joins first on n2, a on n1.
    let rb = join_at(n2, "n2", "x2", "b");
    assert_eq!(rb.peer, "offline");
    let ra = join_at(n1, "n1", "x2", "a");
    assert_eq!(ra.peer, "online");
    expect_events(n2, &rb, 0, &[Event::Online(1)], Duration::from_secs(3));
    expect_events(n1, &ra, 0, &[Event::Online(1)], Duration::from_secs(3));
    relay_both_ways(n1, &ra, 1, n2, &rb, 1, "x2");

    // Leaving on one node tells the peer on the other: left.
    let mut wb = start_poll(n3, &b, 6, 5000);
    std::thread::sleep(Duration::from_millis(100));
    let r = leave_raw_at(n1, &a);
    assert_eq!(r.status, 204, "{r:?}");
    let p = parse_poll(&wb.read_response());
    assert_eq!(p.events, vec![offline(7, "left")]);
    assert_eq!(p.peer, "offline");
    assert_error(&send_raw_at(n3, &b, b"anyone?", None), 409, "peer_offline");
    // The pair on n1/n2 is untouched.
    expect_events(n1, &ra, 2, &[], Duration::from_millis(0));
    expect_events(n2, &rb, 2, &[], Duration::from_millis(0));
}

#[test]
fn every_request_kind_on_a_node_that_is_not_the_sessions_home() {
    let c = Cluster::start(
        3,
        &[
            "--heartbeat",
            FAST_HEARTBEAT,
            "--max-message-bytes",
            "1024",
            "--max-session-buffer",
            "4096",
        ],
    );
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));
    // a lives on n1, b on n2; every request for a goes to n3 (or n2).
    let a = join_at(n1, "n1", "fw", "a");
    let b = join_at(n2, "n2", "fw", "b");
    assert_eq!(b.peer, "online");

    // Poll with timeout 0: the same answer as at home.
    let p = poll_at(n3, &a, 0, 0);
    assert_eq!(p.events, vec![Event::Online(1)]);
    assert_eq!(p.peer, "online");
    assert_eq!(poll_at(n1, &a, 0, 0), p, "home and non-home answer alike");

    // A waiting poll through n3 is woken by b's message.
    let mut w = start_poll(n3, &a, 1, 5000);
    std::thread::sleep(Duration::from_millis(100));
    send_at(n2, &b, "via home");
    let p = parse_poll(&w.read_response());
    assert_eq!(p.events, vec![msg(2, "via home")]);

    // Send through n3 (and through b's own home, n2).
    send_at(n3, &a, "from a via n3");
    send_at(n2, &a, "from a via n2");
    expect_events(
        n2,
        &b,
        0,
        &[
            Event::Online(1),
            msg(2, "from a via n3"),
            msg(3, "from a via n2"),
        ],
        Duration::from_secs(3),
    );

    // One idempotency key through three different nodes: delivered once.
    assert_accepted(&send_raw_at(n3, &a, b"idem", Some("k-42")));
    assert_accepted(&send_raw_at(n2, &a, b"idem", Some("k-42")));
    assert_accepted(&send_raw_at(n1, &a, b"idem", Some("k-42")));
    expect_events(n2, &b, 3, &[msg(4, "idem")], Duration::from_secs(3));

    // Errors of a send, through n3.
    assert_error(
        &send_raw_at(n3, &a, b"x", Some("bad key with spaces")),
        400,
        "bad_idempotency_key",
    );
    assert_error(&send_raw_at(n3, &a, &[b'x'; 1025], None), 413, "too_large");
    assert_error(&send_raw_at(n3, &a, b"\xff\xfe", None), 400, "bad_utf8");

    // A cursor beyond the session's last seq, through n3.
    assert_error(
        &poll_raw_at(n3, &a, "after=99&timeout_ms=0"),
        400,
        "bad_after",
    );

    // Tokens that match no live session, through n3: 404.
    let forged = Joined {
        token: wrong_secret(&a.token),
        ..a.clone()
    };
    assert_error(&poll_raw_at(n3, &forged, "timeout_ms=0"), 404, "no_session");
    assert_error(&send_raw_at(n3, &forged, b"x", None), 404, "no_session");
    assert_error(&leave_raw_at(n3, &forged), 404, "no_session");
    let other_pair = Joined {
        pair: "fw-other".into(),
        ..a.clone()
    };
    assert_error(
        &poll_raw_at(n3, &other_pair, "timeout_ms=0"),
        404,
        "no_session",
    );
    let other_side = Joined {
        side: "b".into(),
        ..a.clone()
    };
    assert_error(
        &poll_raw_at(n3, &other_side, "timeout_ms=0"),
        404,
        "no_session",
    );
    let unknown_node = Joined {
        token: format!("n9.{}", a.token.split_once('.').unwrap().1),
        ..a.clone()
    };
    assert_error(
        &poll_raw_at(n3, &unknown_node, "timeout_ms=0"),
        404,
        "no_session",
    );

    // A newer poll (through n2) answers the older one (through n3) at once.
    let mut older = start_poll(n3, &a, 2, 5000);
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    let mut newer = start_poll(n2, &a, 2, 5000);
    let (r, ms) = finish_poll(&mut older, t);
    let p = parse_poll(&r);
    assert_eq!(p.events, vec![], "{r:?}");
    assert!(ms < 2000, "older poll answered {ms} ms after the newer one");
    send_at(n1, &b, "to the newer poll");
    let p = parse_poll(&newer.read_response());
    assert_eq!(p.events, vec![msg(3, "to the newer poll")]);

    // Resume through n3: 200, same token, events kept.
    let r = join_raw_at(n3, "fw", "a", Some(&a.token));
    let resumed = check_join(&r, 200, "fw", "a");
    assert_eq!(resumed.token, a.token);
    assert_eq!(resumed.peer, "online");
    // (Events up to 2 were acknowledged by the polls above.)
    expect_events(
        n3,
        &a,
        2,
        &[msg(3, "to the newer poll")],
        Duration::from_secs(2),
    );

    // The side is taken cluster-wide, with or without another's token.
    assert_error(&join_raw_at(n3, "fw", "a", None), 409, "side_taken");
    assert_error(
        &join_raw_at(n3, "fw", "a", Some(&b.token)),
        409,
        "side_taken",
    );
    assert_error(&join_raw_at(n1, "fw", "b", None), 409, "side_taken");

    // A full peer buffer answers 429 peer_busy through n3; an ack frees it.
    let chunk = "z".repeat(1000);
    let mut accepted = 0u64;
    let mut busy = None;
    for _ in 0..10 {
        let r = send_raw_at(n3, &a, chunk.as_bytes(), None);
        if r.status == 202 {
            assert_accepted(&r);
            accepted += 1;
        } else {
            busy = Some(r);
            break;
        }
    }
    let busy = busy.expect("10 sends of 1000 bytes never filled a 4096-byte buffer");
    assert_error(&busy, 429, "peer_busy");
    // "Reached" the limit: 4 messages (4000 bytes and their events) fit
    // under 4096, a 5th may still be taken while the total is below it.
    assert!(
        (3..=5).contains(&accepted),
        "{accepted} sends of 1000 bytes accepted into a 4096-byte buffer"
    );
    // Still refused while nothing is acknowledged, also through a's home.
    assert_error(&send_raw_at(n3, &a, b"more", None), 429, "peer_busy");
    assert_error(&send_raw_at(n1, &a, b"more", None), 429, "peer_busy");
    // Everything accepted is there, nothing refused is.
    let p = poll_at(n2, &b, 4, 0);
    let want: Vec<Event> = (0..accepted).map(|k| msg(5 + k, &chunk)).collect();
    assert_eq!(p.events, want);
    let last = 4 + accepted;
    let p = poll_at(n2, &b, last, 0); // acknowledges everything
    assert_eq!(p.events, vec![]);
    assert_accepted(&send_raw_at(n3, &a, chunk.as_bytes(), None));
    expect_events(
        n2,
        &b,
        last,
        &[msg(last + 1, &chunk)],
        Duration::from_secs(2),
    );

    // Leave through n3: 204; the session is gone everywhere; b hears left.
    let r = leave_raw_at(n3, &a);
    assert_eq!(r.status, 204, "{r:?}");
    assert_common_headers(&r);
    assert_error(&poll_raw_at(n3, &a, "timeout_ms=0"), 404, "no_session");
    assert_error(&poll_raw_at(n1, &a, "timeout_ms=0"), 404, "no_session");
    assert_error(&send_raw_at(n2, &a, b"x", None), 404, "no_session");
    expect_events(
        n2,
        &b,
        last + 1,
        &[offline(last + 2, "left")],
        Duration::from_secs(3),
    );
    assert_error(&send_raw_at(n3, &b, b"x", None), 409, "peer_offline");
    // After the leave, a resume with a's old token is an ordinary join.
    let r = join_raw_at(n3, "fw", "a", Some(&a.token));
    let again = check_join(&r, 201, "fw", "a");
    assert_token_shape(&again.token, "n3");
    assert_ne!(again.token, a.token);
    assert_eq!(again.peer, "online");
}

#[test]
fn resume_on_a_non_home_node_returns_200_with_the_same_token() {
    let c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));
    let a = join_at(n1, "n1", "res", "a");
    let b = join_at(n2, "n2", "res", "b");
    send_at(n2, &b, "kept");
    for (node, name) in [(n2, "n2"), (n3, "n3"), (n1, "n1")] {
        let r = join_raw_at(node, "res", "a", Some(&a.token));
        let j = check_join(&r, 200, "res", "a");
        assert_eq!(j.token, a.token, "resume at {name} must keep the token");
        assert_eq!(j.peer, "online", "resume at {name}");
        assert_eq!(j.poll_timeout_ms, a.poll_timeout_ms);
        assert_eq!(j.session_ttl_ms, a.session_ttl_ms);
    }
    // The events were kept and the pair still works.
    expect_events(
        n3,
        &a,
        0,
        &[Event::Online(1), msg(2, "kept")],
        Duration::from_secs(2),
    );
    relay_both_ways(n3, &a, 2, n1, &b, 1, "after resume");
    // b resumes at n1 (not its home) too.
    let r = join_raw_at(n1, "res", "b", Some(&b.token));
    assert_eq!(check_join(&r, 200, "res", "b").token, b.token);
    // No extra peer_online from the resumes.
    expect_events(n1, &a, 3, &[], Duration::from_millis(0));
    expect_events(n2, &b, 2, &[], Duration::from_millis(0));
}

#[test]
fn simultaneous_joins_of_a_and_b_on_different_nodes() {
    let c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    let combos = [(0, 1), (1, 2), (2, 0), (1, 0), (2, 1), (0, 2)];
    for round in 0..12 {
        let (ia, ib) = combos[round % combos.len()];
        let pair = format!("sim{round}");
        let barrier = Arc::new(Barrier::new(2));
        let spawn = |addr: SocketAddr, side: &'static str| {
            let barrier = barrier.clone();
            let pair = pair.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                barrier.wait();
                join_raw(&mut conn, &pair, side, None)
            })
        };
        let ta = spawn(c.node(ia).addr, "a");
        let tb = spawn(c.node(ib).addr, "b");
        let ra = ta.join().expect("join thread a");
        let rb = tb.join().expect("join thread b");
        let a = check_join(&ra, 201, &pair, "a");
        let b = check_join(&rb, 201, &pair, "b");
        assert_token_shape(&a.token, c.name(ia));
        assert_token_shape(&b.token, c.name(ib));
        assert!(
            a.peer == "online" || b.peer == "online",
            "round {round}: neither join found the other: {ra:?} {rb:?}"
        );
        eprintln!(
            "simultaneous joins, round {round}: peer at join a={} b={}",
            a.peer, b.peer
        );
        // Both are linked: peer_online is the first event of each.
        let pa = expect_events(
            c.node(ia),
            &a,
            0,
            &[Event::Online(1)],
            Duration::from_secs(3),
        );
        let pb = expect_events(
            c.node(ib),
            &b,
            0,
            &[Event::Online(1)],
            Duration::from_secs(3),
        );
        assert_eq!((pa.as_str(), pb.as_str()), ("online", "online"));
        relay_both_ways(c.node(ia), &a, 1, c.node(ib), &b, 1, &pair);
    }
}

#[test]
fn the_same_side_claimed_on_two_nodes_leaves_exactly_one() {
    let c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    // One after the other: the second claim, anywhere, is refused.
    let first = join_at(c.node(0), "n1", "dup", "a");
    assert_error(&join_raw_at(c.node(1), "dup", "a", None), 409, "side_taken");
    assert_error(&join_raw_at(c.node(2), "dup", "a", None), 409, "side_taken");
    expect_events(c.node(0), &first, 0, &[], Duration::from_millis(0));

    // At the same time on two nodes.
    let combos = [(0, 1), (1, 2), (2, 0), (1, 0), (2, 1), (0, 2)];
    for round in 0..12 {
        let (ix, iy) = combos[round % combos.len()];
        let iz = 3 - ix - iy;
        let pair = format!("race{round}");
        let barrier = Arc::new(Barrier::new(2));
        let spawn = |addr: SocketAddr| {
            let barrier = barrier.clone();
            let pair = pair.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                barrier.wait();
                join_raw(&mut conn, &pair, "a", None)
            })
        };
        let tx = spawn(c.node(ix).addr);
        let ty = spawn(c.node(iy).addr);
        let rx = tx.join().expect("join thread");
        let ry = ty.join().expect("join thread");
        let mut joined: Vec<(usize, Joined)> = Vec::new();
        for (i, r) in [(ix, &rx), (iy, &ry)] {
            match r.status {
                201 => {
                    let j = check_join(r, 201, &pair, "a");
                    assert_token_shape(&j.token, c.name(i));
                    joined.push((i, j));
                }
                409 => assert_error(r, 409, "side_taken"),
                _ => panic!("round {round}: join at {} answered {r:?}", c.name(i)),
            }
        }
        assert!(
            !joined.is_empty(),
            "round {round}: both claims refused: {rx:?} {ry:?}"
        );
        eprintln!(
            "same side, round {round}: join statuses {} at {}, {} at {}",
            rx.status,
            c.name(ix),
            ry.status,
            c.name(iy)
        );
        // If both were granted, exactly one must end: its polls answer 404.
        let deadline = Instant::now() + Duration::from_secs(3);
        let winner = loop {
            let status: Vec<u16> = joined
                .iter()
                .map(|(i, j)| poll_raw_at(c.node(*i), j, "timeout_ms=0").status)
                .collect();
            for s in &status {
                assert!(*s == 200 || *s == 404, "round {round}: poll status {s}");
            }
            let live: Vec<usize> = (0..joined.len()).filter(|&k| status[k] == 200).collect();
            assert!(
                !live.is_empty(),
                "round {round}: both claims ended (polls answer 404)"
            );
            if live.len() == 1 {
                break live[0];
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: both claims of side a still live 3 s after the joins: {rx:?} {ry:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        for (k, (i, j)) in joined.iter().enumerate() {
            if k != winner {
                let r = poll_raw_at(c.node(*i), j, "timeout_ms=0");
                assert_error(&r, 404, "no_session");
                // Also through another node.
                let r = poll_raw_at(c.node(iz), j, "timeout_ms=0");
                assert_error(&r, 404, "no_session");
            }
        }
        let (iw, w) = &joined[winner];
        // Still settled, and any further claim is refused.
        for i in 0..3 {
            assert_error(&join_raw_at(c.node(i), &pair, "a", None), 409, "side_taken");
        }
        // The survivor pairs with b on the third node.
        let b = join_at(c.node(iz), c.name(iz), &pair, "b");
        assert_eq!(b.peer, "online", "round {round}");
        expect_events(
            c.node(*iw),
            w,
            0,
            &[Event::Online(1)],
            Duration::from_secs(3),
        );
        expect_events(
            c.node(iz),
            &b,
            0,
            &[Event::Online(1)],
            Duration::from_secs(3),
        );
        relay_both_ways(c.node(*iw), w, 1, c.node(iz), &b, 1, &pair);
    }
}

/// Polls from `after` until an answer brings nothing new within `quiet`
/// (at most `within` in all); returns every event seen.
fn drain_events(
    s: &Server,
    j: &Joined,
    after: u64,
    quiet: Duration,
    within: Duration,
) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut cursor = after;
    let mut got = Vec::new();
    for _ in 0..100 {
        let p = poll_at(s, j, cursor, quiet.as_millis() as u64);
        if p.events.is_empty() {
            return got;
        }
        for e in p.events {
            assert_eq!(
                e.seq(),
                cursor + 1,
                "events of {}/{}: {e:?}",
                j.pair,
                j.side
            );
            cursor = e.seq();
            got.push(e);
        }
        assert!(
            Instant::now() < deadline,
            "events of {}/{} still coming after {within:?}: {got:?}",
            j.pair,
            j.side
        );
    }
    panic!("more than 100 polls for {}/{}", j.pair, j.side);
}

#[test]
fn the_same_side_claimed_on_both_sides_of_a_partition_leaves_exactly_one_after_it_heals() {
    let c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT, "--session-ttl", "30s"]);
    // a1 on n1 with b on n3; then n1 is cut off (SIGSTOP) and a second
    // claim to side a succeeds on n2, which cannot see a1.
    let a1 = join_at(c.node(0), "n1", "split", "a");
    let b = join_at(c.node(2), "n3", "split", "b");
    assert_eq!(b.peer, "online");
    expect_events(
        c.node(0),
        &a1,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    expect_events(
        c.node(2),
        &b,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    c.signal(0, "STOP");
    c.wait_not_up(1, 0, Duration::from_secs(2));
    c.wait_not_up(2, 0, Duration::from_secs(2));
    expect_events(
        c.node(2),
        &b,
        1,
        &[offline(2, "node_down")],
        Duration::from_secs(2),
    );
    let a2 = join_at(c.node(1), "n2", "split", "a");
    assert_eq!(a2.peer, "online", "a2 must find b on n3");
    expect_events(
        c.node(2),
        &b,
        2,
        &[Event::Online(3)],
        Duration::from_secs(2),
    );
    expect_events(
        c.node(1),
        &a2,
        0,
        &[Event::Online(1)],
        Duration::from_secs(2),
    );
    let mut w2 = start_poll(c.node(1), &a2, 1, 6000);
    std::thread::sleep(Duration::from_millis(100));

    c.signal(0, "CONT");
    c.wait_all_up(CLUSTER_UP_WITHIN);
    // Exactly one claim survives; the other's polls answer 404.
    let claims = [(0usize, &a1), (1usize, &a2)];
    let deadline = Instant::now() + Duration::from_secs(3);
    let winner = loop {
        let status: Vec<u16> = claims
            .iter()
            .map(|(i, j)| poll_raw_at(c.node(*i), j, "after=1&timeout_ms=0").status)
            .collect();
        for st in &status {
            assert!(*st == 200 || *st == 404, "poll status {st}");
        }
        match (status[0], status[1]) {
            (200, 404) => break 0,
            (404, 200) => break 1,
            (404, 404) => panic!("both claims ended after the partition healed"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "both claims of side a still live 3 s after the partition healed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let loser = 1 - winner;
    eprintln!(
        "partition heal: the claim on {} survived",
        c.name(claims[winner].0)
    );
    let (iw, w) = claims[winner];
    let (_, l) = claims[loser];
    for i in 0..3 {
        assert_error(
            &poll_raw_at(c.node(i), l, "timeout_ms=0"),
            404,
            "no_session",
        );
        assert_error(&send_raw_at(c.node(i), l, b"x", None), 404, "no_session");
        assert_error(
            &join_raw_at(c.node(i), "split", "a", None),
            409,
            "side_taken",
        );
    }
    // a2's waiting poll: 404 if it lost, else an ordinary 200. A loser's
    // poll may also be answered just before its node learns it lost: b's
    // node, switching to the winning claim, tells a2 its peer went
    // (`peer_offline` `left`); the 404s above then follow. Both orders
    // are within API.md §3 (the session ends; its later polls answer 404).
    let r = w2.read_response();
    if loser == 1 && r.status != 200 {
        assert_error(&r, 404, "no_session");
    } else {
        let p = parse_poll(&r);
        if loser == 1 {
            assert_eq!(
                p.events,
                vec![offline(2, "left")],
                "the loser's early answer"
            );
        }
    }
    // The survivor and b end linked (last event peer_online on both) and relay.
    let we = drain_events(
        c.node(iw),
        w,
        1,
        Duration::from_millis(400),
        Duration::from_secs(5),
    );
    let be = drain_events(
        c.node(2),
        &b,
        3,
        Duration::from_millis(400),
        Duration::from_secs(5),
    );
    eprintln!("partition heal: survivor's events after 1: {we:?}; b's after 3: {be:?}");
    let w_seq = we.last().map(|e| e.seq()).unwrap_or(1);
    let b_seq = be.last().map(|e| e.seq()).unwrap_or(3);
    if let Some(e) = we.last() {
        assert!(
            matches!(e, Event::Online(_)),
            "survivor's last event: {we:?}"
        );
    }
    if let Some(e) = be.last() {
        assert!(matches!(e, Event::Online(_)), "b's last event: {be:?}");
    }
    assert_eq!(poll_at(c.node(iw), w, w_seq, 0).peer, "online");
    assert_eq!(poll_at(c.node(2), &b, b_seq, 0).peer, "online");
    relay_both_ways(c.node(iw), w, w_seq, c.node(2), &b, b_seq, "after the heal");
}

// ---------------------------------------------------------------------------
// Nodes failing
// ---------------------------------------------------------------------------

#[test]
fn kill_9_of_a_node_gives_its_peers_node_down_within_1s() {
    let mut c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    // P: a on n1, b on n2 (to be killed). C: a on n1, b on n3 (control).
    let a = join_at(c.node(0), "n1", "kp", "a");
    let b = join_at(c.node(1), "n2", "kp", "b");
    let ca = join_at(c.node(0), "n1", "kc", "a");
    let cb = join_at(c.node(2), "n3", "kc", "b");
    expect_events(
        c.node(0),
        &a,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    expect_events(
        c.node(0),
        &ca,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    expect_events(
        c.node(2),
        &cb,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    let mut wa = start_poll(c.node(0), &a, 1, 5000);
    // b's poll waits on n2 through n3.
    expect_events(
        c.node(2),
        &b,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    let mut wb = start_poll(c.node(2), &b, 1, 5000);
    std::thread::sleep(Duration::from_millis(150));

    let t = Instant::now();
    c.kill9(1);
    let (r, ms) = finish_poll(&mut wa, t);
    let p = parse_poll(&r);
    assert_eq!(p.events, vec![offline(2, "node_down")], "{r:?}");
    assert_eq!(p.peer, "offline");
    eprintln!("kill -9: node_down after {ms} ms");
    assert!(
        ms <= KILL_BOUND_MS + LATENCY_SLACK_MS,
        "node_down came {ms} ms after kill -9 (bound {KILL_BOUND_MS} ms + {LATENCY_SLACK_MS} ms slack)"
    );
    // The poll forwarded to the dead node: 503 unavailable.
    let (r, ms) = finish_poll(&mut wb, t);
    assert_error(&r, 503, "unavailable");
    assert!(
        ms <= KILL_BOUND_MS + LATENCY_SLACK_MS,
        "forwarded poll answered {ms} ms after the kill"
    );

    // Every request for a session whose home is down: 503 unavailable.
    for node in [0, 2] {
        let s = c.node(node);
        assert_error(&poll_raw_at(s, &b, "timeout_ms=0"), 503, "unavailable");
        assert_error(&send_raw_at(s, &b, b"x", None), 503, "unavailable");
        assert_error(&leave_raw_at(s, &b), 503, "unavailable");
    }
    assert_error(&send_raw_at(c.node(0), &a, b"x", None), 409, "peer_offline");
    // Exactly one node_down, and the control pair was not touched.
    expect_events(
        c.node(0),
        &a,
        1,
        &[offline(2, "node_down")],
        Duration::from_millis(300),
    );
    expect_events(c.node(0), &ca, 1, &[], Duration::from_millis(0));
    expect_events(c.node(2), &cb, 1, &[], Duration::from_millis(0));
    relay_both_ways(c.node(0), &ca, 1, c.node(2), &cb, 1, "control");
    for i in [0, 2] {
        let state = c.wait_not_up(i, 1, Duration::from_secs(2));
        assert!(state == "down" || state == "connecting", "{state}");
    }
    let m = metrics(c.node(0));
    assert_eq!(metric(&m, "pairlink_cluster_peers", "state=\"up\""), 1.0);

    // The pair re-forms with a new b on a live node.
    let nb = join_at(c.node(2), "n3", "kp", "b");
    assert_eq!(nb.peer, "online");
    expect_events(
        c.node(0),
        &a,
        2,
        &[Event::Online(3)],
        Duration::from_secs(3),
    );
    expect_events(
        c.node(2),
        &nb,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    relay_both_ways(c.node(0), &a, 3, c.node(2), &nb, 1, "re-formed");
    assert_all_serving(&c, &[0, 2]);
}

/// Node `r` is killed with `-9` and started again on the same ports; its
/// peers see it down then up, its old sessions are gone (404), and pairs
/// re-form when their client joins again.
fn restart_scenario(r: usize) {
    let mut c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    let others: Vec<usize> = (0..3).filter(|&i| i != r).collect();
    let (x, y) = (others[0], others[1]);
    let (nr, nx, ny) = (
        c.name(r).to_string(),
        c.name(x).to_string(),
        c.name(y).to_string(),
    );
    // P: a on x, b on r. Q: a on x, b on y (control).
    let a = join_at(c.node(x), &nx, "rp", "a");
    let b = join_at(c.node(r), &nr, "rp", "b");
    let qa = join_at(c.node(x), &nx, "rq", "a");
    let qb = join_at(c.node(y), &ny, "rq", "b");
    for (i, j) in [(x, &a), (r, &b), (x, &qa), (y, &qb)] {
        expect_events(c.node(i), j, 0, &[Event::Online(1)], Duration::from_secs(3));
    }
    let mut wa = start_poll(c.node(x), &a, 1, 5000);
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    c.kill9(r);
    let (resp, ms) = finish_poll(&mut wa, t);
    assert_eq!(
        parse_poll(&resp).events,
        vec![offline(2, "node_down")],
        "{resp:?}"
    );
    eprintln!("restart of {nr}: node_down after {ms} ms");
    assert!(
        ms <= KILL_BOUND_MS + LATENCY_SLACK_MS,
        "node_down after {ms} ms"
    );

    c.restart(r);
    c.wait_all_up(CLUSTER_UP_WITHIN);
    // The old session died with the process.
    for i in [r, x, y] {
        assert_error(
            &poll_raw_at(c.node(i), &b, "timeout_ms=0"),
            404,
            "no_session",
        );
    }
    // Joining with the dead session's token is an ordinary join.
    let resp = join_raw_at(c.node(r), "rp", "b", Some(&b.token));
    let nb = check_join(&resp, 201, "rp", "b");
    assert_token_shape(&nb.token, &nr);
    assert_ne!(nb.token, b.token);
    assert_eq!(nb.peer, "online", "the restarted node must find a on {nx}");
    expect_events(
        c.node(x),
        &a,
        2,
        &[Event::Online(3)],
        Duration::from_secs(3),
    );
    expect_events(
        c.node(r),
        &nb,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    relay_both_ways(c.node(x), &a, 3, c.node(r), &nb, 1, "after restart");
    // Requests for the new session through every node.
    relay_both_ways(
        c.node(y),
        &a,
        4,
        c.node(y),
        &nb,
        2,
        "through the third node",
    );
    // The control pair never noticed.
    expect_events(c.node(x), &qa, 1, &[], Duration::from_millis(0));
    expect_events(c.node(y), &qb, 1, &[], Duration::from_millis(0));
    relay_both_ways(c.node(x), &qa, 1, c.node(y), &qb, 1, "control");
    // A pair between the restarted node and the third one forms too.
    let sa = join_at(c.node(y), &ny, "rs", "a");
    let sb = join_at(c.node(r), &nr, "rs", "b");
    assert_eq!(sb.peer, "online");
    expect_events(
        c.node(y),
        &sa,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    relay_both_ways(c.node(y), &sa, 1, c.node(r), &sb, 1, "new pair");
}

#[test]
fn a_restarted_accepting_node_rejoins_and_pairs_reform() {
    // n3 sorts highest: the others dial it again after it comes back.
    restart_scenario(2);
}

#[test]
fn a_restarted_dialing_node_rejoins_and_pairs_reform() {
    // n1 sorts lowest: it dials the others itself when it comes back.
    restart_scenario(0);
}

/// `SIGSTOP` of n2 for a while, then `SIGCONT`, with heartbeat `hb_ms`.
fn stop_cont_scenario(hb_ms: u64) {
    let hb = format!("{hb_ms}ms");
    let c = Cluster::start(3, &["--heartbeat", &hb, "--session-ttl", "30s"]);
    // P: a on n1, b on n2 (to be stopped). C: a on n1, b on n3 (control).
    let a = join_at(c.node(0), "n1", "sp", "a");
    let b = join_at(c.node(1), "n2", "sp", "b");
    let ca = join_at(c.node(0), "n1", "sc", "a");
    let cb = join_at(c.node(2), "n3", "sc", "b");
    for (i, j) in [(0, &a), (1, &b), (0, &ca), (2, &cb)] {
        expect_events(c.node(i), j, 0, &[Event::Online(1)], Duration::from_secs(3));
    }
    let bound = 4 * u128::from(hb_ms) + LATENCY_SLACK_MS;
    let mut wa = start_poll(c.node(0), &a, 1, (bound + 3000) as u64);
    std::thread::sleep(Duration::from_millis(150));

    let t = Instant::now();
    c.signal(1, "STOP");
    // A join meanwhile waits for n2's lookup answer at most 1 s.
    let n1_addr = c.node(0).addr;
    let joiner = std::thread::spawn(move || {
        let mut conn = Conn::connect(n1_addr);
        let t = Instant::now();
        let r = join_raw(&mut conn, "during-stop", "a", None);
        (r, ms_since(t))
    });
    let (r, ms) = finish_poll(&mut wa, t);
    let p = parse_poll(&r);
    assert_eq!(p.events, vec![offline(2, "node_down")], "{r:?}");
    assert_eq!(p.peer, "offline");
    eprintln!("SIGSTOP (heartbeat {hb_ms} ms): node_down after {ms} ms");
    assert!(
        ms <= bound,
        "node_down came {ms} ms after SIGSTOP; bound: 3 heartbeats + 1 of slack ({} ms) + {LATENCY_SLACK_MS} ms",
        4 * hb_ms
    );
    let (r, join_ms) = joiner.join().expect("joiner");
    eprintln!("SIGSTOP (heartbeat {hb_ms} ms): join answered in {join_ms} ms");
    let j = check_join(&r, 201, "during-stop", "a");
    assert_eq!(j.peer, "offline");
    assert!(
        join_ms <= LOOKUP_DEADLINE_MS + LATENCY_SLACK_MS,
        "a join during the stop took {join_ms} ms (lookup deadline {LOOKUP_DEADLINE_MS} ms)"
    );
    // While n2 is stopped: its sessions are unavailable, a's peer is offline.
    assert_error(
        &poll_raw_at(c.node(0), &b, "timeout_ms=0"),
        503,
        "unavailable",
    );
    assert_error(&send_raw_at(c.node(2), &b, b"x", None), 503, "unavailable");
    assert_error(&send_raw_at(c.node(0), &a, b"x", None), 409, "peer_offline");
    expect_events(c.node(0), &ca, 1, &[], Duration::from_millis(0));
    relay_both_ways(c.node(0), &ca, 1, c.node(2), &cb, 1, "control during stop");

    c.signal(1, "CONT");
    c.wait_all_up(CLUSTER_UP_WITHIN);
    // Both sides find each other again.
    expect_events(
        c.node(0),
        &a,
        2,
        &[Event::Online(3)],
        Duration::from_secs(5),
    );
    expect_events(
        c.node(1),
        &b,
        1,
        &[offline(2, "node_down"), Event::Online(3)],
        Duration::from_secs(5),
    );
    relay_both_ways(c.node(0), &a, 3, c.node(1), &b, 3, "after SIGCONT");
    expect_events(c.node(0), &ca, 2, &[], Duration::from_millis(0));
    expect_events(c.node(2), &cb, 2, &[], Duration::from_millis(0));
    assert_all_serving(&c, &[0, 1, 2]);
}

#[test]
fn sigstop_then_sigcont_with_the_default_heartbeat() {
    // 1 s is the default heartbeat: node_down within 3 s (+1 s of slack).
    stop_cont_scenario(1000);
}

#[test]
fn sigstop_then_sigcont_with_a_fast_heartbeat() {
    stop_cont_scenario(200);
}

#[test]
fn sigterm_on_a_node_ends_its_sessions_and_its_peers_get_shutdown() {
    let mut c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    // P: a on n1, b on n2. R: a on n2, b on n3. L: both sides on n2.
    let a = join_at(c.node(0), "n1", "tp", "a");
    let b = join_at(c.node(1), "n2", "tp", "b");
    let ra = join_at(c.node(1), "n2", "tr", "a");
    let rb = join_at(c.node(2), "n3", "tr", "b");
    let la = join_at(c.node(1), "n2", "tl", "a");
    let lb = join_at(c.node(1), "n2", "tl", "b");
    // Q: a on n1, b on n3; a's poll will wait at n1 through n2.
    let qa = join_at(c.node(0), "n1", "tq", "a");
    let qb = join_at(c.node(2), "n3", "tq", "b");
    for (i, j) in [
        (0, &a),
        (1, &b),
        (1, &ra),
        (2, &rb),
        (1, &la),
        (1, &lb),
        (0, &qa),
        (2, &qb),
    ] {
        expect_events(c.node(i), j, 0, &[Event::Online(1)], Duration::from_secs(3));
    }
    let mut wa = start_poll(c.node(0), &a, 1, 5000);
    let mut wrb = start_poll(c.node(2), &rb, 1, 5000);
    let mut wla = start_poll(c.node(1), &la, 1, 5000);
    let mut wlb = start_poll(c.node(1), &lb, 1, 5000);
    // b's poll waits on n2 through n3.
    let mut wb = start_poll(c.node(2), &b, 1, 5000);
    // qa's poll waits on n1 through n2, the node about to drain.
    let mut wqa = start_poll(c.node(1), &qa, 1, 5000);
    std::thread::sleep(Duration::from_millis(200));

    let t = Instant::now();
    c.signal(1, "TERM");
    for (w, who) in [(&mut wa, "a on n1"), (&mut wrb, "b on n3")] {
        let (r, ms) = finish_poll(w, t);
        let p = parse_poll(&r);
        assert_eq!(p.events, vec![offline(2, "shutdown")], "{who}: {r:?}");
        assert_eq!(p.peer, "offline", "{who}");
        assert!(ms < 3000, "{who}: shutdown came {ms} ms after SIGTERM");
    }
    for (w, who) in [(&mut wla, "a on n2"), (&mut wlb, "b on n2")] {
        let p = parse_poll(&w.read_response());
        assert_eq!(p.events, vec![offline(2, "shutdown")], "{who}");
    }
    // A drain answers the waiting poll of its own session: 200, no events
    // (its peer, on n1, is alive).
    let r = wb.read_response();
    let p = parse_poll(&r);
    assert_eq!(p.events, vec![], "b's poll through n3: {r:?}");
    // So does a drain of the node a poll came through (API.md §3: a poll
    // answered by a drain gets 200 with the events it has): its home
    // answers it when the draining node cancels it.
    let r = wqa.read_response();
    assert_eq!(r.status, 200, "qa's poll through the draining n2: {r:?}");
    let p = parse_poll(&r);
    assert_eq!((p.peer.as_str(), p.events), ("online", vec![]), "{r:?}");

    let node = c.nodes[1].as_mut().unwrap();
    let status = node
        .wait_exit(Duration::from_secs(5))
        .expect("n2 still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let s = c.nodes[1].take().unwrap();
    c.gone.push(("n2".into(), s));

    for i in [0, 2] {
        let state = c.wait_not_up(i, 1, Duration::from_secs(2));
        assert!(state == "down" || state == "connecting", "{state}");
    }
    // Exactly one peer_offline (no node_down after the shutdown).
    expect_events(c.node(0), &a, 2, &[], Duration::from_millis(500));
    expect_events(c.node(2), &rb, 2, &[], Duration::from_millis(0));
    assert_error(&send_raw_at(c.node(0), &a, b"x", None), 409, "peer_offline");
    assert_error(
        &poll_raw_at(c.node(0), &b, "timeout_ms=0"),
        503,
        "unavailable",
    );
    assert_all_serving(&c, &[0, 2]);
}

// ---------------------------------------------------------------------------
// Bad node-to-node peers
// ---------------------------------------------------------------------------

#[test]
fn a_node_with_a_wrong_cookie_never_becomes_up() {
    let c = Cluster::start_with(3, &["--heartbeat", FAST_HEARTBEAT], Some(2));
    // Several handshake attempts' worth of time: n3 is never up anywhere.
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut samples = 0;
    while Instant::now() < deadline {
        for i in 0..2 {
            let v = c.view(i);
            let s = v.state_of("n3");
            assert!(
                s == "connecting" || s == "down",
                "{} sees n3 {s}: {v:?}",
                c.name(i)
            );
            assert_eq!(v.state_of(c.name(1 - i)), "up", "{v:?}");
        }
        let v = c.view(2);
        for p in &v.peers {
            assert_ne!(p.state, "up", "n3 (wrong cookie) sees a peer up: {v:?}");
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(samples >= 10);
    assert_all_serving(&c, &[0, 1, 2]);
    let m = metrics(c.node(0));
    assert_eq!(metric(&m, "pairlink_cluster_peers", "state=\"up\""), 1.0);
    assert_eq!(
        metric(&m, "pairlink_cluster_peers", "state=\"down\"")
            + metric(&m, "pairlink_cluster_peers", "state=\"connecting\""),
        1.0
    );

    // Each side keeps working: n1/n2 as a cluster, n3 alone.
    let a = join_at(c.node(0), "n1", "wc", "a");
    let b = join_at(c.node(1), "n2", "wc", "b");
    assert_eq!(b.peer, "online");
    relay_both_ways(c.node(0), &a, 1, c.node(1), &b, 1, "n1-n2");
    let la = join_at(c.node(2), "n3", "alone", "a");
    let lb = join_at(c.node(2), "n3", "alone", "b");
    assert_eq!(lb.peer, "online");
    relay_both_ways(c.node(2), &la, 1, c.node(2), &lb, 1, "on n3");
    // A session on n3 is unreachable from n1.
    assert_error(
        &poll_raw_at(c.node(0), &la, "timeout_ms=0"),
        503,
        "unavailable",
    );
    // The refusals were logged.
    let logs = c.all_stderr().to_ascii_lowercase();
    assert!(
        logs.contains("proof") || logs.contains("cookie") || logs.contains("handshake"),
        "no log line about the failed authentication"
    );
}

/// A handshake `Hello` frame (docs/PROTOCOL.md §3.1).
fn hello(version: u8, name: &str) -> Vec<u8> {
    let mut body = vec![1u8, version, name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&[0x5a; 32]);
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

/// Waits up to `within` for the server to close `s`; Ok when it did.
fn closed_within(s: &mut TcpStream, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut got = 0usize;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "still open after {within:?} ({got} bytes received)"
            ));
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                got += n;
                if got > 1 << 20 {
                    return Err("more than 1 MiB from a cluster port".into());
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(()), // reset
        }
    }
}

/// A peer that is never reached says so in the log, on both ends of the
/// link: the node that dials it (after a run of failed dials), and the node
/// it would dial, which otherwise shows nothing at all (the usual cause: the
/// peer's own `--peer` list lacks this node).
#[test]
fn a_peer_never_reached_is_named_in_the_log() {
    let dir = scratch_directory();
    let cookie = dir.join("cookie");
    write_cookie(&cookie, "a-cookie-of-at-least-sixteen-bytes");
    let cookie = cookie.to_str().unwrap().to_string();
    let ports = free_ports(4);
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    // n1 dials n2, which is not there.
    let dialer_args = [
        "--node".to_string(),
        "n1".into(),
        "--cluster-listen".into(),
        addr(0),
        "--peer".into(),
        format!("n2={}", addr(1)),
        "--cookie-file".into(),
        cookie.clone(),
        "--heartbeat".into(),
        "100ms".into(),
    ];
    // n9 waits for n0 to dial it, which never comes.
    let waiter_args = [
        "--node".to_string(),
        "n9".into(),
        "--cluster-listen".into(),
        addr(2),
        "--peer".into(),
        format!("n0={}", addr(3)),
        "--cookie-file".into(),
        cookie,
        "--heartbeat".into(),
        "100ms".into(),
    ];
    let dialer_args: Vec<&str> = dialer_args.iter().map(String::as_str).collect();
    let waiter_args: Vec<&str> = waiter_args.iter().map(String::as_str).collect();
    let dialer = Server::start(&dialer_args);
    let waiter = Server::start(&waiter_args);
    let wanted = [
        (&dialer, "cannot reach peer n2"),
        (&waiter, "peer n0 is not connected"),
    ];
    let deadline = Instant::now() + Duration::from_secs(8);
    for (server, line) in wanted {
        while !server.stderr().contains(line) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            server.stderr().contains(line),
            "no {line:?} in:\n{}",
            server.stderr()
        );
    }
    dialer.assert_serving();
    waiter.assert_serving();
}

#[test]
fn garbage_on_the_cluster_port_is_closed_and_the_node_keeps_serving() {
    let c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    let a = join_at(c.node(0), "n1", "gb", "a");
    let b = join_at(c.node(1), "n2", "gb", "b");
    expect_events(
        c.node(0),
        &a,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );
    expect_events(
        c.node(1),
        &b,
        0,
        &[Event::Online(1)],
        Duration::from_secs(3),
    );

    let mut random = Vec::with_capacity(4096);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        random.push(x as u8);
    }
    let mut forged_n1 = hello(1, "n1");
    forged_n1.extend_from_slice(&[0, 0, 0, 33, 2]);
    forged_n1.extend_from_slice(&[0x77; 32]);
    let mut hello_then_huge = hello(1, "n1");
    hello_then_huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 2]);
    let mut ping_first = vec![0, 0, 0, 17, 3];
    ping_first.extend_from_slice(&[0; 16]);
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("zero length", vec![0, 0, 0, 0]),
        ("unknown type", vec![0, 0, 0, 5, 99, 1, 2, 3, 4]),
        ("handshake frame over 256 bytes", vec![0, 0, 1, 1, 1]),
        ("Hello of version 2", hello(2, "n1")),
        ("Hello from an unknown node", hello(1, "zz")),
        ("Hello as n1 with a forged Proof", forged_n1),
        ("Hello then a 4 GiB length", hello_then_huge),
        ("Ping before the handshake", ping_first),
        ("random bytes", random),
        ("nothing at all", Vec::new()),
    ];
    let mut open = Vec::new();
    for i in 0..3 {
        let addr: SocketAddr = c.peer_addr(i).parse().unwrap();
        for (what, bytes) in &payloads {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connect to {}'s cluster port: {e}", c.name(i)));
            s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
            // The node may close before reading everything: ignore errors.
            let _ = s.write_all(bytes);
            open.push((i, *what, s));
        }
    }
    // The handshake deadline is 3 heartbeats and at least 1 s.
    let deadline = Instant::now() + Duration::from_secs(4);
    for (i, what, mut s) in open {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = closed_within(&mut s, left.max(Duration::from_millis(10))) {
            panic!("{}'s cluster port, {what}: connection {e}", c.name(i));
        }
    }

    // The cluster is intact: all up, the pair still linked, nothing lost.
    c.wait_all_up(Duration::from_secs(1));
    assert_all_serving(&c, &[0, 1, 2]);
    expect_events(c.node(0), &a, 1, &[], Duration::from_millis(0));
    expect_events(c.node(1), &b, 1, &[], Duration::from_millis(0));
    relay_both_ways(c.node(0), &a, 1, c.node(1), &b, 1, "after garbage");
    let x = join_at(c.node(2), "n3", "gb2", "a");
    let y = join_at(c.node(1), "n2", "gb2", "b");
    assert_eq!(y.peer, "online");
    relay_both_ways(c.node(2), &x, 1, c.node(1), &y, 1, "n3-n2");
    for i in 0..3 {
        let m = metrics(c.node(i));
        assert_eq!(metric(&m, "pairlink_cluster_peers", "state=\"up\""), 2.0);
        // Eleven failed handshakes in a second: logged once, not eleven
        // times (anyone who reaches the port could flood the log).
        let log = c.node(i).stderr();
        let lines = log.matches("closed before the handshake completed").count();
        assert!(
            (1..=2).contains(&lines),
            "{} logged {lines} lines:\n{log}",
            c.name(i)
        );
    }
}

/// Accepted cluster connections that may be handshaking at once
/// (`INBOUND_HANDSHAKES_MAX` in src/io/cluster.rs).
const INBOUND_HANDSHAKES_MAX: usize = 32;

/// Opens `n` connections to `addr` that send nothing.
fn silent_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("silent connection {i} to {addr}: {e}"))
        })
        .collect()
}

/// How many of `conns` the server has closed: each is read without
/// waiting until it would block (open: an accepted connection has been
/// sent the node's `Hello`, nothing more) or ends (closed).
fn count_closed(conns: &mut [TcpStream]) -> usize {
    conns.iter_mut().map(is_closed).filter(|&c| c).count()
}

/// Whether the server closed `s` (what it sent before, a Hello, is read
/// and dropped); asking again gives the same answer.
fn is_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let mut got = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                got += n;
                assert!(got <= 4096, "more than a Hello from a cluster port");
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true, // reset
        }
    }
}

#[test]
fn connections_still_handshaking_on_the_cluster_port_are_bounded() {
    // A slow heartbeat puts the handshake deadline (3 heartbeats) at 6 s,
    // far beyond this test's waits: only the bound closes anything here.
    let mut c = Cluster::start(2, &["--heartbeat", "2s"]);
    c.wait_all_up(CLUSTER_UP_WITHIN);
    // n1 dials, n2 accepts: n1's connection, authenticated, holds no place.
    let addr: SocketAddr = c.peer_addr(1).parse().unwrap();
    let extra = 8;
    let mut flood = silent_connections(addr, INBOUND_HANDSHAKES_MAX + extra);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count_closed(&mut flood),
        extra,
        "of {} silent connections, all but {INBOUND_HANDSHAKES_MAX} are closed at once",
        flood.len()
    );
    // The oldest ones made room for the newest.
    assert!(
        flood[..extra].iter_mut().all(is_closed) && !flood[extra..].iter_mut().any(is_closed),
        "the oldest silent connections are the ones closed"
    );
    let m = metrics(c.node(1));
    assert_eq!(
        metric(&m, "pairlink_cluster_connections_refused_total", ""),
        extra as f64
    );
    // Meanwhile the node serves HTTP and keeps its peer.
    assert_all_serving(&c, &[0, 1]);
    assert_eq!(c.view(1).state_of("n1"), "up");
    let x = join_at(c.node(0), "n1", "hs", "a");
    let y = join_at(c.node(1), "n2", "hs", "b");
    assert_eq!(y.peer, "online");
    relay_both_ways(c.node(0), &x, 1, c.node(1), &y, 1, "during the flood");

    // Closing them gives their places back.
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    let mut again = silent_connections(addr, INBOUND_HANDSHAKES_MAX);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count_closed(&mut again), 0, "places not given back");

    // With every place held by a silent connection (whose deadline is
    // 6 s away), a restarted peer still gets in at once: its connection
    // takes the oldest place. (When the newcomer was the one closed, the
    // peer stayed out for as long as the places were held.)
    c.kill9(0);
    c.restart(0);
    if let Err(e) = c.try_wait_up(&[0, 1], Duration::from_secs(3)) {
        panic!("silent connections kept a restarted peer out: {e}");
    }
    let evicted = count_closed(&mut again);
    assert!(evicted >= 1, "no silent connection made room for the peer");
    let m = metrics(c.node(1));
    assert_eq!(
        metric(&m, "pairlink_cluster_connections_refused_total", ""),
        (extra + evicted) as f64
    );
    assert_all_serving(&c, &[0, 1]);
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

#[test]
fn cluster_metrics_count_peers_lookups_forwarding_and_rtt() {
    let mut c = Cluster::start(3, &["--heartbeat", FAST_HEARTBEAT]);
    // Every node has had a heartbeat round trip with each peer.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        let m = metrics(c.node(i));
        assert_eq!(metric(&m, "pairlink_cluster_peers", "state=\"up\""), 2.0);
        assert_eq!(metric(&m, "pairlink_cluster_peers", "state=\"down\""), 0.0);
        assert_eq!(
            metric(&m, "pairlink_cluster_peers", "state=\"connecting\""),
            0.0
        );
        for j in 0..3 {
            if j != i {
                let rtt = metric(
                    &m,
                    "pairlink_peer_rtt_seconds",
                    &format!("peer=\"{}\"", c.name(j)),
                );
                assert!((0.0..1.0).contains(&rtt), "rtt to {}: {rtt}", c.name(j));
            }
        }
        metric(&m, "pairlink_session_exits_total", "reason=\"node_down\"");
    }
    let before: Vec<Metrics> = (0..3).map(|i| metrics(c.node(i))).collect();
    let a = join_at(c.node(0), "n1", "mt", "a"); // nobody there: a miss
    let b = join_at(c.node(1), "n2", "mt", "b"); // a found on n1: remote
    assert_eq!(b.peer, "online");
    let after: Vec<Metrics> = (0..3).map(|i| metrics(c.node(i))).collect();
    let delta = |i: usize, name: &str, labels: &str| {
        metric(&after[i], name, labels) - metric(&before[i], name, labels)
    };
    let lookups = "pairlink_lookups_total";
    assert_eq!(delta(0, lookups, "outcome=\"miss\""), 1.0);
    assert_eq!(delta(0, lookups, "outcome=\"remote\""), 0.0);
    assert_eq!(delta(1, lookups, "outcome=\"remote\""), 1.0);
    assert_eq!(delta(1, lookups, "outcome=\"miss\""), 0.0);
    assert_eq!(delta(1, lookups, "outcome=\"local\""), 0.0);

    // Two requests for a sent to n3: two forwarded requests in all.
    let before: Vec<Metrics> = (0..3).map(|i| metrics(c.node(i))).collect();
    send_at(c.node(2), &a, "through n3");
    assert_eq!(poll_at(c.node(2), &a, 0, 0).events, vec![Event::Online(1)]);
    let after: Vec<Metrics> = (0..3).map(|i| metrics(c.node(i))).collect();
    let fwd = "pairlink_forwarded_requests_total";
    let total: f64 = (0..3)
        .map(|i| metric(&after[i], fwd, "") - metric(&before[i], fwd, ""))
        .sum();
    assert_eq!(total, 2.0, "forwarded requests counted across the cluster");
    assert_eq!(
        metric(&after[2], fwd, "") - metric(&before[2], fwd, ""),
        2.0,
        "n3 forwarded both requests"
    );
    expect_events(
        c.node(1),
        &b,
        0,
        &[Event::Online(1), msg(2, "through n3")],
        Duration::from_secs(2),
    );

    // A killed peer leaves the up count.
    c.kill9(2);
    c.wait_not_up(0, 2, Duration::from_secs(2));
    let m = metrics(c.node(0));
    assert_eq!(metric(&m, "pairlink_cluster_peers", "state=\"up\""), 1.0);
    assert_eq!(
        metric(&m, "pairlink_cluster_peers", "state=\"down\"")
            + metric(&m, "pairlink_cluster_peers", "state=\"connecting\""),
        1.0
    );
    assert!(
        m.value("pairlink_peer_rtt_seconds", "peer=\"n2\"")
            .is_some(),
        "rtt of the peer still up"
    );
    assert!(
        m.value("pairlink_peer_rtt_seconds", "peer=\"n3\"")
            .is_none(),
        "rtt of a peer that is down"
    );
}
