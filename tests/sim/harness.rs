//! The simulated cluster: several `Node` cores in one process, a seeded
//! scheduler for frames, timers, faults and client requests, and the
//! invariant checks run at quiescence.
//!
//! Everything is driven from one event queue ordered by `(virtual ms, seq)`.
//! Nothing reads a clock or draws OS randomness, so a seed replays exactly.

use super::json::Json;
use pairlink::cluster::frame::{ForwardOp, Frame};
use pairlink::core::{Addr, CancelKey, Node, NodeConfig, Output, Reply, Started};
use pairlink::proto::ids::{parse_node_name, NodeName, PairId, Side, Token};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

/// Heartbeat interval of the modelled connections.
pub const HEARTBEAT_MS: u64 = 1_000;
/// A node silent this long has its connections dropped (3 heartbeats).
pub const SILENT_DROP_MS: u64 = 3 * HEARTBEAT_MS;
/// Bound on events processed by one run: a run that needs more is livelocked.
const EVENTS_MAX: u64 = 2_000_000;
/// Virtual time the heal phase may take before the run counts as stuck.
const HEAL_MS_MAX: u64 = 60_000;
/// Virtual time after the last link came up before quiescence is checked:
/// long enough for resync lookups, their lookup timeout and any links.
const HEAL_SETTLE_MS: u64 = 2_500;
/// Offset of the nodes' wall clocks, so skews stay positive.
const WALL_BASE_MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Randomness

/// splitmix64: tiny, seedable, good enough to pick schedules.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `pm` per mille.
    pub fn pm(&mut self, pm: u64) -> bool {
        self.below(1000) < pm
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// Knobs

/// What one run looks like. `Knobs::random` draws them from the seed.
#[derive(Clone, Debug)]
pub struct Knobs {
    pub nodes: usize,
    pub pairs: usize,
    pub clients_per_side: usize,
    /// Random client operations before the heal phase (0 for scripts).
    pub ops: usize,
    pub op_gap_max_ms: u64,
    /// Frame delay: usually `1..=delay_max_ms`, sometimes up to `slow_max_ms`.
    pub delay_max_ms: u64,
    pub slow_pm: u64,
    pub slow_max_ms: u64,
    /// Per client tick, per mille.
    pub link_drop_pm: u64,
    pub pause_pm: u64,
    pub pause_max_ms: u64,
    pub crash_pm: u64,
    pub shutdown_pm: u64,
    pub skew_max_ms: u64,
    pub session_ttl_ms: u64,
    pub poll_timeout_ms: u64,
    pub lookup_timeout_ms: u64,
    pub max_sessions: usize,
    pub max_session_buffer: usize,
    pub max_total_buffer: usize,
    /// Dropped links come back by themselves after a random delay.
    pub auto_reconnect: bool,
}

impl Knobs {
    /// Fixed, fault-free settings for scripted scenarios.
    pub fn scripted(nodes: usize) -> Knobs {
        Knobs {
            nodes,
            pairs: 2,
            clients_per_side: 2,
            ops: 0,
            op_gap_max_ms: 0,
            delay_max_ms: 5,
            slow_pm: 0,
            slow_max_ms: 5,
            link_drop_pm: 0,
            pause_pm: 0,
            pause_max_ms: 0,
            crash_pm: 0,
            shutdown_pm: 0,
            skew_max_ms: 0,
            session_ttl_ms: 5_000,
            poll_timeout_ms: 1_000,
            lookup_timeout_ms: 500,
            max_sessions: 64,
            max_session_buffer: 4096,
            max_total_buffer: 65536,
            auto_reconnect: false,
        }
    }

    /// Diagnosis overrides: `SIM_SLOW_MAX`, `SIM_PAUSE_MAX` (ms) and
    /// `SIM_FAULTS=0` narrow the random runs to isolate a failure.
    pub fn apply_env(&mut self) {
        let get = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(ms) = get("SIM_SLOW_MAX") {
            self.slow_max_ms = self.slow_max_ms.min(ms).max(1);
            self.delay_max_ms = self.delay_max_ms.min(ms).max(1);
        }
        if let Some(ms) = get("SIM_PAUSE_MAX") {
            self.pause_max_ms = self.pause_max_ms.min(ms);
            if ms == 0 {
                self.pause_pm = 0;
            }
        }
        if get("SIM_FAULTS") == Some(0) {
            self.link_drop_pm = 0;
            self.pause_pm = 0;
            self.crash_pm = 0;
            self.shutdown_pm = 0;
        }
        if get("SIM_CRASH") == Some(0) {
            self.crash_pm = 0;
            self.shutdown_pm = 0;
        }
    }

    /// Settings drawn from the seed: mostly 3 nodes, sometimes 4–5; calm
    /// runs, lossy runs and stormy runs.
    pub fn random(rng: &mut Rng) -> Knobs {
        let nodes = match rng.below(10) {
            0..=6 => 3,
            7..=8 => 4,
            _ => 5,
        };
        let storm = rng.below(4); // 0 calm .. 3 stormy
        let f = |base: u64| base * storm;
        Knobs {
            nodes,
            pairs: rng.range(1, 4) as usize,
            clients_per_side: 2,
            ops: rng.range(100, 300) as usize,
            op_gap_max_ms: rng.pick(&[10, 40, 100]),
            delay_max_ms: rng.pick(&[2, 10, 30]),
            slow_pm: rng.pick(&[0, 20, 100]),
            slow_max_ms: rng.pick(&[100, 400, 900]),
            link_drop_pm: f(6),
            pause_pm: f(4),
            pause_max_ms: rng.pick(&[400, 2_500, 6_000]),
            crash_pm: f(rng.below(2)),
            shutdown_pm: f(rng.below(2)),
            skew_max_ms: rng.pick(&[0, 50, 500]),
            session_ttl_ms: 5_000,
            poll_timeout_ms: 1_000,
            lookup_timeout_ms: 500,
            max_sessions: rng.pick(&[6, 16, 64]),
            max_session_buffer: rng.pick(&[40, 200, 4096]),
            max_total_buffer: rng.pick(&[100, 1000, 65536]),
            auto_reconnect: true,
        }
    }
}

// ---------------------------------------------------------------------------
// Records

/// A session anywhere in the cluster: node, incarnation of that node (a
/// crashed node restarts with a fresh core), slab key and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sid {
    pub node: usize,
    pub inc: u32,
    pub key: u32,
    pub gen: u64,
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.node + 1)?;
        if self.inc > 0 {
            write!(f, "r{}", self.inc)?;
        }
        write!(f, ":{}.{}", self.key, self.gen)
    }
}

/// An event a client saw in a poll answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Online,
    Msg(String),
    Offline(String),
}

/// A session's peer changed from one handler to another without passing
/// through "no peer" between two observations.
#[derive(Clone, Debug)]
pub struct Switch {
    pub from: Sid,
    pub to: Sid,
    /// Seqs issued in between are `lo+1..=hi`.
    pub lo: u64,
    pub hi: u64,
    pub at: u64,
}

#[derive(Clone, Debug)]
pub struct SessRec {
    pub pair: usize,
    pub side: Side,
    pub hlc: u64,
    pub token: Option<Token>,
    /// When its token first reached a client (join answered 200/201).
    pub handed_at: Option<u64>,
    /// Its join answered 201 with `"peer":"online"`.
    pub joined_online: bool,
    pub owner: Option<usize>,
    pub live: bool,
    pub ended_at: Option<u64>,
    pub peer: Option<Sid>,
    pub last_seq: u64,
    pub events: BTreeMap<u64, Seen>,
    pub seen_max: u64,
    pub switches: Vec<Switch>,
    pub heal_polling: bool,
}

#[derive(Clone, Debug)]
pub enum Op {
    Join {
        auth: Option<Token>,
        secret: [u8; 16],
    },
    Poll {
        after: u64,
        timeout_ms: Option<u64>,
    },
    Send {
        msg: String,
        text: String,
        key: Option<Vec<u8>>,
    },
    Leave,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Join { auth: None, .. } => write!(f, "join"),
            Op::Join { auth: Some(t), .. } => {
                write!(f, "join(resume {}.{}.{})", t.node, t.key, t.gen)
            }
            Op::Poll { after, timeout_ms } => {
                write!(f, "poll(after={after}, timeout={timeout_ms:?})")
            }
            Op::Send { text, key, .. } => write!(
                f,
                "send({text}{})",
                key.as_ref().map_or(String::new(), |k| format!(
                    ", key={}",
                    String::from_utf8_lossy(k)
                ))
            ),
            Op::Leave => write!(f, "leave"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqState {
    /// On its way to the node.
    Sent,
    /// The node said it answers later.
    Waiting,
    Answered,
    /// The client went away (cancel).
    Cancelled,
    /// The client's connection died with its node (crash).
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqKind {
    Normal,
    Heal,
    Final,
}

#[derive(Clone, Debug)]
pub struct Req {
    pub client: usize,
    pub node: usize,
    pub pair: usize,
    pub side: Side,
    pub op: Op,
    pub token: Option<Token>,
    pub sid: Option<Sid>,
    pub issued: u64,
    pub state: ReqState,
    pub cancel: Option<CancelKey>,
    pub kind: ReqKind,
    pub reply: Option<Reply>,
    pub answered_at: Option<u64>,
    /// When the node took it (after the client-to-node delay).
    pub applied_at: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub pair: usize,
    pub side: Side,
    pub token: Option<(Token, Sid)>,
    /// Tokens this client held before.
    pub old: Vec<(Token, Sid)>,
    pub polls_out: u32,
    pub op_out: bool,
    /// A logical message to send again with the same idempotency key.
    pub retry: Option<String>,
}

#[derive(Clone, Debug)]
pub struct MsgRec {
    pub sender: Sid,
    pub key: Option<Vec<u8>>,
    pub attempts: Vec<String>,
    pub accepted: bool,
}

#[derive(Clone, Debug, Default)]
pub struct AttemptRec {
    /// The sender's linked peer when its home node carried the send out.
    pub receiver: Option<Option<Sid>>,
    pub status: Option<u16>,
}

// ---------------------------------------------------------------------------
// Events

#[derive(Debug)]
pub enum Input {
    Frame {
        from: usize,
        epoch: u64,
        frame: Frame,
    },
    Clock {
        from: usize,
        epoch: u64,
        hlc: u64,
    },
    Op(u64),
    Cancel(u64),
    PeerUp(usize),
    PeerDown(usize),
}

#[derive(Debug)]
enum Ev {
    Input { node: usize, inp: Input },
    Timer { node: usize },
    ClientTick,
    PingTick,
    HealTick,
    StartHeal,
    LinkUp { a: usize, b: usize },
    Resume { node: usize, id: u64 },
    PauseDrop { node: usize, id: u64 },
    ShutdownExit { node: usize },
    Restarted { node: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Run,
    Heal,
    Final,
    Done,
}

struct SimNode {
    core: Node<u64>,
    config: NodeConfig,
    paused: bool,
    pause_id: u64,
    deferred: VecDeque<Input>,
    timer_at: Option<u64>,
    inc: u32,
    /// Incarnation of node j when this node last saw it come up.
    view_inc: Vec<u32>,
    live: BTreeSet<Sid>,
    /// Draining before an exit, or down between crash and restart.
    exiting: bool,
    skew: u64,
    /// Pauses as (start, end) in virtual ms; end is MAX while paused.
    pauses: Vec<(u64, u64)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Link {
    up: bool,
    epoch: u64,
    reconnect_pending: bool,
    /// Held down by a scripted partition.
    held: bool,
}

// ---------------------------------------------------------------------------
// The simulation

pub struct Sim {
    pub seed: u64,
    rng: Rng,
    pub k: Knobs,
    pub now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<SimNode>,
    names: Vec<NodeName>,
    pub pairs: Vec<PairId>,
    links: Vec<Vec<Link>>,
    /// Last delivery time on the directed link a -> b.
    fifo: Vec<Vec<u64>>,
    /// Extra delay on the directed link a -> b (scripts make one path slow).
    extra: Vec<Vec<u64>>,
    pub clients: Vec<Client>,
    pub reqs: BTreeMap<u64, Req>,
    next_req: u64,
    pub sessions: BTreeMap<Sid, SessRec>,
    pub msgs: BTreeMap<String, MsgRec>,
    pub attempts: HashMap<String, AttemptRec>,
    next_msg: u64,
    pub violations: Vec<String>,
    pub trace: Option<Vec<String>>,
    pub phase: Phase,
    ops_left: usize,
    frames_in_flight: u64,
    events: u64,
    heal_links_up_at: u64,
    pub answers_to_cancelled: u64,
    /// What the run exercised, for the coverage summary.
    pub counters: BTreeMap<&'static str, u64>,
}

impl Sim {
    /// A run whose knobs come from the seed.
    pub fn random(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let mut k = Knobs::random(&mut rng);
        k.apply_env();
        Sim::with(seed, rng, k, trace)
    }

    pub fn new(seed: u64, k: Knobs, trace: bool) -> Sim {
        Sim::with(seed, Rng::new(seed), k, trace)
    }

    fn with(seed: u64, mut rng: Rng, k: Knobs, trace: bool) -> Sim {
        let names: Vec<NodeName> = (0..k.nodes)
            .map(|i| parse_node_name(&format!("n{}", i + 1)).unwrap())
            .collect();
        let nodes = (0..k.nodes)
            .map(|i| {
                let config = NodeConfig {
                    name: names[i].clone(),
                    peers: (0..k.nodes)
                        .filter(|&j| j != i)
                        .map(|j| names[j].clone())
                        .collect(),
                    session_ttl_ms: k.session_ttl_ms,
                    poll_timeout_ms: k.poll_timeout_ms,
                    lookup_timeout_ms: k.lookup_timeout_ms,
                    max_sessions: k.max_sessions,
                    max_session_buffer: k.max_session_buffer,
                    max_total_buffer: k.max_total_buffer,
                };
                SimNode {
                    core: Node::new(config.clone()),
                    config,
                    paused: false,
                    pause_id: 0,
                    deferred: VecDeque::new(),
                    timer_at: None,
                    inc: 0,
                    view_inc: vec![0; k.nodes],
                    live: BTreeSet::new(),
                    exiting: false,
                    skew: rng.below(k.skew_max_ms + 1),
                    pauses: Vec::new(),
                }
            })
            .collect();
        let pairs = (0..k.pairs)
            .map(|p| PairId::try_from(format!("p{p}").as_str()).unwrap())
            .collect();
        let mut clients = Vec::new();
        for pair in 0..k.pairs {
            for side in [Side::A, Side::B] {
                for _ in 0..k.clients_per_side {
                    clients.push(Client {
                        pair,
                        side,
                        token: None,
                        old: Vec::new(),
                        polls_out: 0,
                        op_out: false,
                        retry: None,
                    });
                }
            }
        }
        Sim {
            seed,
            rng,
            ops_left: k.ops,
            links: vec![vec![Link::default(); k.nodes]; k.nodes],
            fifo: vec![vec![0; k.nodes]; k.nodes],
            extra: vec![vec![0; k.nodes]; k.nodes],
            k,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            names,
            pairs,
            clients,
            reqs: BTreeMap::new(),
            next_req: 1,
            sessions: BTreeMap::new(),
            msgs: BTreeMap::new(),
            attempts: HashMap::new(),
            next_msg: 1,
            violations: Vec::new(),
            trace: trace.then(Vec::new),
            phase: Phase::Run,
            frames_in_flight: 0,
            events: 0,
            heal_links_up_at: 0,
            answers_to_cancelled: 0,
            counters: BTreeMap::new(),
        }
    }

    // -- small helpers -------------------------------------------------------

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let line = f();
            t.push(format!("{:>7} {line}", self.now));
        }
    }

    fn violate(&mut self, msg: String) {
        self.log(|| format!("!! VIOLATION {msg}"));
        if self.violations.len() < 50 {
            self.violations.push(msg);
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t.max(self.now), self.seq), ev);
    }

    fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s index for global node `j`.
    fn local(i: usize, j: usize) -> u16 {
        debug_assert_ne!(i, j);
        (if j < i { j + 1 } else { j }) as u16
    }

    /// Global node of node `i`'s peer index `p`.
    fn global(i: usize, p: u16) -> usize {
        let x = p as usize - 1;
        if x < i {
            x
        } else {
            x + 1
        }
    }

    fn link(&mut self, a: usize, b: usize) -> &mut Link {
        let (x, y) = (a.min(b), a.max(b));
        &mut self.links[x][y]
    }

    fn link_ref(&self, a: usize, b: usize) -> &Link {
        &self.links[a.min(b)][a.max(b)]
    }

    fn wall(&self, i: usize) -> u64 {
        WALL_BASE_MS + self.now + self.nodes[i].skew
    }

    fn addr_sid(&self, i: usize, a: Addr) -> Sid {
        if a.node == 0 {
            Sid {
                node: i,
                inc: self.nodes[i].inc,
                key: a.key,
                gen: a.gen,
            }
        } else {
            let j = Self::global(i, a.node);
            Sid {
                node: j,
                inc: self.nodes[i].view_inc[j],
                key: a.key,
                gen: a.gen,
            }
        }
    }

    fn token_sid(&self, t: &Token) -> Option<Sid> {
        let node = self.names.iter().position(|n| *n == t.node)?;
        Some(Sid {
            node,
            inc: self.nodes[node].inc,
            key: t.key,
            gen: t.gen,
        })
    }

    fn delay(&mut self) -> u64 {
        if self.rng.pm(self.k.slow_pm) {
            self.rng.range(1, self.k.slow_max_ms)
        } else {
            self.rng.range(1, self.k.delay_max_ms)
        }
    }

    // -- the event loop --------------------------------------------------------

    /// Processes one event; false when the queue is empty.
    fn step(&mut self) -> bool {
        let Some(((t, _), ev)) = self.queue.pop_first() else {
            return false;
        };
        self.now = t;
        self.events += 1;
        match ev {
            Ev::Input { node, inp } => {
                if matches!(inp, Input::Frame { .. }) {
                    self.frames_in_flight -= 1;
                }
                self.input(node, inp);
            }
            Ev::Timer { node } => {
                if self.nodes[node].timer_at.is_some_and(|at| at <= self.now) {
                    self.nodes[node].timer_at = None;
                }
                if !self.nodes[node].paused {
                    self.nodes[node].core.handle_timeout(self.now);
                    self.after(node, None);
                }
            }
            Ev::ClientTick => self.client_tick(),
            Ev::PingTick => self.ping_tick(),
            Ev::HealTick => self.heal_tick(),
            Ev::StartHeal => self.start_heal(),
            Ev::LinkUp { a, b } => self.link_up(a, b),
            Ev::Resume { node, id } => {
                if self.nodes[node].paused && self.nodes[node].pause_id == id {
                    self.resume(node);
                }
            }
            Ev::PauseDrop { node, id } => {
                if self.nodes[node].paused && self.nodes[node].pause_id == id {
                    self.log(|| format!("n{} silent for 3 heartbeats: its links drop", node + 1));
                    for j in 0..self.node_count() {
                        if j != node && self.link_ref(node, j).up {
                            self.link_down(node, j);
                        }
                    }
                }
            }
            Ev::ShutdownExit { node } => {
                // As the driver does at the end of its drain: forwarded
                // requests still out get 503 before the process goes.
                self.nodes[node].core.abandon_forwards();
                self.after(node, None);
                self.log(|| format!("n{} exits after its drain", node + 1));
                self.crash(node);
            }
            Ev::Restarted { node } => {
                self.nodes[node].exiting = false;
                self.log(|| format!("n{} restarted", node + 1));
                self.reconnect_all(node);
            }
        }
        true
    }

    /// Runs events up to virtual time `until` (inclusive).
    pub fn run_until(&mut self, until: u64) {
        while let Some((&(t, _), _)) = self.queue.first_key_value() {
            if t > until || self.events > EVENTS_MAX {
                break;
            }
            self.step();
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// A whole random run: operations and faults, heal, checks.
    pub fn run_random(&mut self) {
        for a in 0..self.node_count() {
            for b in a + 1..self.node_count() {
                self.at(0, Ev::LinkUp { a, b });
            }
        }
        self.at(1, Ev::ClientTick);
        self.at(HEARTBEAT_MS, Ev::PingTick);
        while self.phase == Phase::Run {
            if !self.step() || self.events > EVENTS_MAX {
                self.violate(format!("run phase stuck after {} events", self.events));
                return;
            }
        }
        self.finish();
    }

    // -- node inputs -----------------------------------------------------------

    /// An input for node `i`: applied now, or queued while `i` is paused.
    fn input(&mut self, i: usize, inp: Input) {
        if self.nodes[i].paused {
            self.nodes[i].deferred.push_back(inp);
            return;
        }
        let done = self.apply(i, inp);
        self.after(i, done);
    }

    /// Applies one input; returns an immediate answer to hand out after the
    /// node's sessions were recorded.
    fn apply(&mut self, i: usize, inp: Input) -> Option<(u64, Reply)> {
        let now = self.now;
        match inp {
            Input::Frame { from, epoch, frame } => {
                let l = *self.link_ref(i, from);
                if !l.up || l.epoch != epoch {
                    self.log(|| {
                        format!(
                            "n{}<-n{} dropped with its connection: {frame:?}",
                            i + 1,
                            from + 1
                        )
                    });
                    return None;
                }
                self.log(|| format!("n{}<-n{} {frame:?}", i + 1, from + 1));
                if let Frame::Forward {
                    key,
                    gen,
                    op: ForwardOp::Send { data, .. },
                    ..
                } = &frame
                {
                    let addr = Addr {
                        node: 0,
                        key: *key,
                        gen: *gen,
                    };
                    self.note_receiver(i, addr, data);
                }
                self.nodes[i]
                    .core
                    .handle_frame(now, Self::local(i, from), frame);
                None
            }
            Input::Clock { from, epoch, hlc } => {
                let l = *self.link_ref(i, from);
                if l.up && l.epoch == epoch {
                    self.nodes[i].core.observe_clock(hlc);
                }
                None
            }
            Input::PeerUp(j) => {
                self.log(|| format!("n{} sees n{} up", i + 1, j + 1));
                self.nodes[i].view_inc[j] = self.nodes[j].inc;
                self.nodes[i].core.peer_up(now, Self::local(i, j));
                None
            }
            Input::PeerDown(j) => {
                self.log(|| format!("n{} sees n{} down", i + 1, j + 1));
                self.nodes[i].core.peer_down(now, Self::local(i, j));
                None
            }
            Input::Cancel(rid) => {
                let r = &self.reqs[&rid];
                if r.state == ReqState::Waiting {
                    if let Some(key) = r.cancel {
                        self.log(|| format!("n{} cancel req {rid}", i + 1));
                        self.reqs.get_mut(&rid).unwrap().state = ReqState::Cancelled;
                        self.nodes[i].core.cancel(now, key);
                        self.client_done(rid, None);
                    }
                }
                None
            }
            Input::Op(rid) => self.apply_op(i, rid),
        }
    }

    fn apply_op(&mut self, i: usize, rid: u64) -> Option<(u64, Reply)> {
        let now = self.now;
        let wall = self.wall(i);
        let r = self.reqs[&rid].clone();
        if r.state != ReqState::Sent {
            return None;
        }
        self.reqs.get_mut(&rid).unwrap().applied_at = Some(now);
        let forwarded = r.token.as_ref().is_some_and(|t| t.node != self.names[i])
            || matches!(&r.op, Op::Join { auth: Some(t), .. } if t.node != self.names[i]);
        if forwarded {
            self.count("ops forwarded");
        }
        self.log(|| {
            format!(
                "n{} <- req {rid} c{} {}/{}: {}",
                i + 1,
                r.client,
                r.pair,
                r.side.as_str(),
                r.op
            )
        });
        let pair = self.pairs[r.pair].clone();
        let side = r.side;
        let core = &mut self.nodes[i].core;
        let started = match &r.op {
            Op::Join { auth, secret } => {
                core.join(now, wall, &pair, side, auth.as_ref(), *secret, || rid)
            }
            Op::Poll { after, timeout_ms } => core.poll(
                now,
                &pair,
                side,
                r.token.as_ref().unwrap(),
                *after,
                *timeout_ms,
                || rid,
            ),
            Op::Send { text, key, .. } => {
                let t = r.token.clone().unwrap();
                if t.node == self.names[i] {
                    self.note_receiver(
                        i,
                        Addr {
                            node: 0,
                            key: t.key,
                            gen: t.gen,
                        },
                        text,
                    );
                }
                let core = &mut self.nodes[i].core;
                core.send(
                    now,
                    &pair,
                    side,
                    &t,
                    key.as_deref(),
                    text.as_str().into(),
                    || rid,
                )
            }
            Op::Leave => core.leave(now, &pair, side, r.token.as_ref().unwrap(), || rid),
        };
        match started {
            Started::Done(reply) => Some((rid, reply)),
            Started::Waiting(cancel) => {
                let r = self.reqs.get_mut(&rid).unwrap();
                r.state = ReqState::Waiting;
                r.cancel = cancel;
                None
            }
        }
    }

    /// The home node is about to carry out a send of session `addr`: note
    /// which session it goes to (the sender's linked peer right now).
    fn note_receiver(&mut self, i: usize, addr: Addr, text: &str) {
        let peer = self.nodes[i]
            .core
            .inspect()
            .find(|v| v.addr.key == addr.key && v.addr.gen == addr.gen)
            .map(|v| v.peer);
        let receiver = peer.map(|p| p.map(|a| self.addr_sid(i, a)));
        if let (Some(rec), Some(receiver)) = (self.attempts.get_mut(text), receiver) {
            rec.receiver = Some(receiver);
        }
    }

    /// After node `i` took an input: record its sessions, hand out answers,
    /// ship frames, arm its timer.
    fn after(&mut self, i: usize, done: Option<(u64, Reply)>) {
        self.snapshot(i);
        if let Some((rid, reply)) = done {
            self.on_answer(i, rid, reply);
        }
        while let Some(out) = self.nodes[i].core.poll_output() {
            match out {
                Output::Answer { waiter, reply } => self.on_answer(i, waiter, reply),
                Output::Send { peer, frame } => {
                    let j = Self::global(i, peer);
                    self.ship(i, j, frame);
                }
            }
        }
        if let Some(t) = self.nodes[i].core.next_deadline() {
            if self.nodes[i].timer_at.is_none_or(|at| t < at) {
                self.nodes[i].timer_at = Some(t);
                self.at(t, Ev::Timer { node: i });
            }
        }
    }

    /// Puts a frame on the connection a -> b, after the frames before it.
    fn ship(&mut self, a: usize, b: usize, frame: Frame) {
        let l = *self.link_ref(a, b);
        if !l.up {
            self.log(|| {
                format!(
                    "n{}->n{} no connection, frame lost: {frame:?}",
                    a + 1,
                    b + 1
                )
            });
            return;
        }
        let t = (self.now + self.delay() + self.extra[a][b]).max(self.fifo[a][b]);
        self.fifo[a][b] = t;
        self.frames_in_flight += 1;
        self.at(
            t,
            Ev::Input {
                node: b,
                inp: Input::Frame {
                    from: a,
                    epoch: l.epoch,
                    frame,
                },
            },
        );
    }

    /// Records node `i`'s live sessions: new ones, ended ones, peer changes.
    fn snapshot(&mut self, i: usize) {
        let inc = self.nodes[i].inc;
        let views: Vec<(Sid, String, Side, u64, Option<Addr>, u64)> = self.nodes[i]
            .core
            .inspect()
            .map(|v| {
                let sid = Sid {
                    node: i,
                    inc,
                    key: v.addr.key,
                    gen: v.addr.gen,
                };
                (sid, v.pair.to_string(), v.side, v.hlc, v.peer, v.last_seq)
            })
            .collect();
        let mut live = BTreeSet::new();
        for (sid, pair, side, hlc, peer, last_seq) in views {
            live.insert(sid);
            let peer = peer.map(|a| self.addr_sid(i, a));
            let now = self.now;
            if !self.sessions.contains_key(&sid) {
                self.log(|| {
                    format!(
                        "   {sid} p{}{} created, claim hlc {hlc}",
                        &pair[1..],
                        side.as_str()
                    )
                });
            }
            let rec = self.sessions.entry(sid).or_insert_with(|| SessRec {
                pair: pair[1..].parse().unwrap(),
                side,
                hlc,
                token: None,
                handed_at: None,
                joined_online: false,
                owner: None,
                live: true,
                ended_at: None,
                peer: None,
                last_seq: 0,
                events: BTreeMap::new(),
                seen_max: 0,
                switches: Vec::new(),
                heal_polling: false,
            });
            if let (Some(from), Some(to)) = (rec.peer, peer) {
                if from != to {
                    rec.switches.push(Switch {
                        from,
                        to,
                        lo: rec.last_seq,
                        hi: last_seq,
                        at: now,
                    });
                }
            }
            let changed = rec.peer != peer;
            rec.peer = peer;
            rec.last_seq = last_seq;
            if changed {
                self.log(|| {
                    format!(
                        "   {sid} p{}{} peer -> {}",
                        &pair[1..],
                        side.as_str(),
                        peer.map_or("none".into(), |p| p.to_string())
                    )
                });
            }
        }
        let gone: Vec<Sid> = self.nodes[i].live.difference(&live).copied().collect();
        for sid in gone {
            self.session_ended(sid);
        }
        self.nodes[i].live = live;
    }

    fn session_ended(&mut self, sid: Sid) {
        let now = self.now;
        if let Some(rec) = self.sessions.get_mut(&sid) {
            rec.live = false;
            rec.ended_at = Some(now);
        }
        self.log(|| format!("   {sid} ended"));
    }

    // -- answers ---------------------------------------------------------------

    fn on_answer(&mut self, i: usize, rid: u64, reply: Reply) {
        let Some(r) = self.reqs.get_mut(&rid) else {
            self.violate(format!(
                "seed {}: n{} answered unknown waiter {rid}",
                self.seed,
                i + 1
            ));
            return;
        };
        match r.state {
            ReqState::Answered => {
                let msg = format!(
                    "seed {}: request {rid} ({}) answered twice: {} then {}",
                    self.seed,
                    r.op,
                    r.reply.as_ref().map_or(0, |r| r.status),
                    reply.status
                );
                self.violate(msg);
                return;
            }
            ReqState::Cancelled | ReqState::Lost => {
                self.answers_to_cancelled += 1;
                return;
            }
            ReqState::Sent | ReqState::Waiting => {}
        }
        r.state = ReqState::Answered;
        r.answered_at = Some(self.now);
        r.reply = Some(reply.clone());
        let r = r.clone();
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        self.log(|| {
            format!(
                "n{} -> req {rid} c{} {}: {} {}",
                i + 1,
                r.client,
                r.op,
                reply.status,
                body
            )
        });
        let status = reply.status;
        self.check_poll_on_time(i, &r);
        let expected: &[u16] = match r.op {
            Op::Join { .. } => &[200, 201, 409, 503],
            Op::Poll { .. } => &[200, 404, 503],
            Op::Send { .. } => &[202, 404, 409, 429, 503],
            Op::Leave => &[204, 404, 503],
        };
        if !expected.contains(&status) {
            self.violate(format!(
                "seed {}: req {rid} {} got unexpected {status} {body}",
                self.seed, r.op
            ));
        }
        match &r.op {
            Op::Join { auth, .. } => {
                self.on_join_answer(rid, &r, auth.as_ref(), status, &reply.body)
            }
            Op::Poll { after, .. } => {
                if status == 200 {
                    self.on_poll_body(rid, r.sid.unwrap(), *after, &reply.body);
                }
            }
            Op::Send { msg, text, .. } => {
                if let Some(a) = self.attempts.get_mut(text) {
                    a.status = Some(status);
                }
                if status == 202 {
                    self.msgs.get_mut(msg).unwrap().accepted = true;
                } else if matches!(status, 409 | 429 | 503)
                    && self.msgs[msg].key.is_some()
                    && r.kind == ReqKind::Normal
                    && self.rng.pm(600)
                {
                    self.clients[r.client].retry = Some(msg.clone());
                }
            }
            Op::Leave => {}
        }
        if matches!(r.op, Op::Poll { .. } | Op::Send { .. } | Op::Leave)
            && matches!(status, 404 | 204)
        {
            // That session is over for its client.
            let c = &mut self.clients[r.client];
            if r.kind == ReqKind::Normal && c.token.as_ref().map(|t| t.1) == r.sid {
                let old = c.token.take().unwrap();
                c.old.push(old);
            }
        }
        self.client_done(rid, Some(status));
    }

    pub fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    /// A poll carried out at its session's home node is answered by its
    /// timeout, unless that node was paused meanwhile.
    fn check_poll_on_time(&mut self, i: usize, r: &Req) {
        let Op::Poll { timeout_ms, .. } = r.op else {
            return;
        };
        let (Some(applied), Some(sid)) = (r.applied_at, r.sid) else {
            return;
        };
        if r.node != sid.node || i != sid.node {
            return;
        }
        let timeout = timeout_ms.unwrap_or(self.k.poll_timeout_ms);
        let paused = self.nodes[i]
            .pauses
            .iter()
            .any(|&(s, e)| s <= self.now && e >= applied);
        if self.now > applied + timeout && !paused {
            let msg = format!(
                "seed {}: liveness: poll of {sid} taken at {applied} with timeout {timeout} answered only at {}",
                self.seed, self.now
            );
            self.violate(msg);
        }
    }

    fn on_join_answer(
        &mut self,
        rid: u64,
        r: &Req,
        auth: Option<&Token>,
        status: u16,
        body: &[u8],
    ) {
        if status != 200 && status != 201 {
            return;
        }
        let parsed = Json::parse(body).ok();
        let token = parsed
            .as_ref()
            .and_then(|j| j.get("session"))
            .and_then(Json::as_str)
            .and_then(|s| Token::parse(s.as_bytes()));
        let Some(token) = token else {
            self.violate(format!(
                "seed {}: join req {rid} answered {status} with a bad body",
                self.seed
            ));
            return;
        };
        let sid = self.token_sid(&token).unwrap();
        if status == 200 && auth != Some(&token) {
            self.violate(format!(
                "seed {}: resume req {rid} answered 200 with another session {sid}",
                self.seed
            ));
        }
        match self.sessions.get_mut(&sid) {
            Some(rec) => {
                if rec.pair != r.pair || rec.side != r.side {
                    let msg = format!(
                        "seed {}: join req {rid} got session {sid} of another pair/side",
                        self.seed
                    );
                    self.violate(msg);
                    return;
                }
                rec.token = Some(token.clone());
                rec.handed_at.get_or_insert(self.now);
                if status == 201 && body.windows(16).any(|w| w == b"\"peer\":\"online\"") {
                    rec.joined_online = true;
                }
                if rec.owner.is_none() || status == 201 {
                    rec.owner = Some(r.client);
                }
            }
            None => {
                self.violate(format!(
                    "seed {}: join req {rid} answered with unknown session {sid}",
                    self.seed
                ));
                return;
            }
        }
        if r.kind == ReqKind::Normal {
            let c = &mut self.clients[r.client];
            if let Some(old) = c.token.take() {
                if old.1 != sid {
                    c.old.push(old);
                }
            }
            c.token = Some((token, sid));
        }
    }

    fn on_poll_body(&mut self, rid: u64, sid: Sid, after: u64, body: &[u8]) {
        let Some(j) = Json::parse(body).ok() else {
            self.violate(format!(
                "seed {}: poll req {rid} body is not JSON",
                self.seed
            ));
            return;
        };
        let mut seen = Vec::new();
        let mut bad = None;
        for e in j.get("events").and_then(Json::as_arr).unwrap_or(&[]) {
            let seq = e.get("seq").and_then(Json::as_u64).unwrap_or(0);
            let ev = match e.get("type").and_then(Json::as_str) {
                Some("peer_online") => Seen::Online,
                Some("message") => Seen::Msg(
                    e.get("data")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string(),
                ),
                Some("peer_offline") => Seen::Offline(
                    e.get("reason")
                        .and_then(Json::as_str)
                        .unwrap_or("?")
                        .to_string(),
                ),
                _ => {
                    bad = Some("unknown event type");
                    continue;
                }
            };
            seen.push((seq, ev));
        }
        if j.get("peer").and_then(Json::as_str).is_none() {
            bad = Some("no peer field");
        }
        for w in seen.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                bad = Some("seqs not consecutive");
            }
        }
        if seen.first().is_some_and(|(s, _)| *s <= after) {
            bad = Some("event at or below after");
        }
        if let Some(what) = bad {
            let body = String::from_utf8_lossy(body);
            self.violate(format!(
                "seed {}: poll req {rid} of {sid} (after={after}): {what}: {body}",
                self.seed
            ));
        }
        let Some(rec) = self.sessions.get_mut(&sid) else {
            return;
        };
        // The answer shows the latest state only if the client knew of
        // nothing newer (answers of concurrent polls can arrive out of order).
        let top = seen.last().map_or(after, |(seq, _)| *seq);
        let latest = top >= rec.seen_max;
        let mut clash = None;
        for (seq, ev) in seen {
            match rec.events.get(&seq) {
                Some(old) if *old != ev => clash = Some((seq, old.clone(), ev)),
                Some(_) => {}
                None => {
                    rec.events.insert(seq, ev);
                }
            }
            rec.seen_max = rec.seen_max.max(seq);
        }
        // Every event the session issued so far is either acknowledged
        // (so seen before) or in this answer: when the client's record is
        // complete, the answer's "peer" agrees with the last link event.
        let complete = rec.events.keys().copied().eq(1..=rec.seen_max);
        let told_online = rec
            .events
            .values()
            .rev()
            .find_map(|e| match e {
                Seen::Online => Some(true),
                Seen::Offline(_) => Some(false),
                Seen::Msg(_) => None,
            })
            .unwrap_or(false);
        let body_online = j.get("peer").and_then(Json::as_str) == Some("online");
        if let Some((seq, old, new)) = clash {
            self.violate(format!(
                "seed {}: {sid} seq {seq} was {old:?}, now {new:?}",
                self.seed
            ));
        }
        if complete && latest && told_online != body_online {
            self.violate(format!(
                "seed {}: inv3: poll req {rid} of {sid} says peer {} but its events say {}",
                self.seed,
                if body_online { "online" } else { "offline" },
                if told_online { "online" } else { "offline" },
            ));
        }
    }

    /// Client bookkeeping when one of its requests is over.
    fn client_done(&mut self, rid: u64, status: Option<u16>) {
        let r = &self.reqs[&rid];
        let (client, kind, sid) = (r.client, r.kind, r.sid);
        let is_poll = matches!(r.op, Op::Poll { .. });
        match kind {
            ReqKind::Normal => {
                let c = &mut self.clients[client];
                if is_poll {
                    c.polls_out = c.polls_out.saturating_sub(1);
                } else {
                    c.op_out = false;
                }
            }
            ReqKind::Heal => {
                let sid = sid.unwrap();
                if let Some(rec) = self.sessions.get_mut(&sid) {
                    rec.heal_polling = false;
                }
                if self.phase == Phase::Heal && status == Some(200) {
                    self.heal_poll(sid);
                }
            }
            ReqKind::Final => {}
        }
    }

    // -- client operations -------------------------------------------------------

    /// Issues a request from client `c` at node `node`, arriving after a
    /// small client-to-node delay. Returns its id.
    pub fn issue(
        &mut self,
        c: usize,
        node: usize,
        op: Op,
        kind: ReqKind,
        sid: Option<(Token, Sid)>,
    ) -> u64 {
        let rid = self.next_req;
        self.next_req += 1;
        let cl = &self.clients[c];
        let (pair, side) = match sid.as_ref().and_then(|(_, s)| self.sessions.get(s)) {
            Some(rec) => (rec.pair, rec.side),
            None => (cl.pair, cl.side),
        };
        let (token, sid) = match sid {
            Some((t, s)) => (Some(t), Some(s)),
            None => (None, None),
        };
        if let Op::Send { text, .. } = &op {
            self.attempts.insert(text.clone(), AttemptRec::default());
        }
        if kind == ReqKind::Normal {
            let cl = &mut self.clients[c];
            if matches!(op, Op::Poll { .. }) {
                cl.polls_out += 1;
            } else {
                cl.op_out = true;
            }
        }
        self.reqs.insert(
            rid,
            Req {
                client: c,
                node,
                pair,
                side,
                op,
                token,
                sid,
                issued: self.now,
                state: ReqState::Sent,
                cancel: None,
                kind,
                reply: None,
                answered_at: None,
                applied_at: None,
            },
        );
        let d = if self.k.ops == 0 {
            1
        } else {
            self.rng.range(0, 3)
        };
        self.at(
            self.now + d,
            Ev::Input {
                node,
                inp: Input::Op(rid),
            },
        );
        rid
    }

    fn fresh_secret(&mut self) -> [u8; 16] {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&self.rng.next().to_le_bytes());
        s[8..].copy_from_slice(&self.rng.next().to_le_bytes());
        s
    }

    /// A new logical message from `sender`; returns (msg id, first attempt text).
    fn new_msg(&mut self, sender: Sid, keyed: bool) -> String {
        let msg = format!("m{}", self.next_msg);
        self.next_msg += 1;
        let key = keyed.then(|| format!("k{msg}").into_bytes());
        self.msgs.insert(
            msg.clone(),
            MsgRec {
                sender,
                key,
                attempts: Vec::new(),
                accepted: false,
            },
        );
        msg
    }

    /// The op for the next attempt of logical message `msg`.
    fn send_op(&mut self, msg: &str) -> Op {
        let rec = self.msgs.get_mut(msg).unwrap();
        let text = format!("{msg}.{}", rec.attempts.len() + 1);
        rec.attempts.push(text.clone());
        Op::Send {
            msg: msg.to_string(),
            text,
            key: rec.key.clone(),
        }
    }

    fn client_tick(&mut self) {
        if self.phase != Phase::Run {
            return;
        }
        self.faults();
        let c = self.rng.below(self.clients.len() as u64) as usize;
        let n = self.node_count() as u64;
        let any_node = self.rng.below(n) as usize;
        let cl = self.clients[c].clone();
        match cl.token.clone() {
            None => {
                // Clients without a session (mostly the second client of a
                // side that is taken) join now and then, not on every tick.
                if !cl.op_out && self.rng.pm(400) {
                    // Sometimes with a stale token of its own.
                    let auth = if !cl.old.is_empty() && self.rng.pm(150) {
                        Some(
                            cl.old[self.rng.below(cl.old.len() as u64) as usize]
                                .0
                                .clone(),
                        )
                    } else {
                        None
                    };
                    let secret = self.fresh_secret();
                    self.issue(
                        c,
                        any_node,
                        Op::Join { auth, secret },
                        ReqKind::Normal,
                        None,
                    );
                }
            }
            Some((tok, sid)) => {
                let home = self.token_sid(&tok).unwrap().node;
                let node = if self.rng.pm(650) { home } else { any_node };
                let roll = self.rng.below(100);
                let rec_seen = self.sessions.get(&sid).map_or(0, |r| r.seen_max);
                if roll < 40 {
                    if cl.polls_out == 0 || (cl.polls_out < 2 && self.rng.pm(100)) {
                        let after = if rec_seen > 0 && self.rng.pm(150) {
                            self.rng.below(rec_seen + 1)
                        } else {
                            rec_seen
                        };
                        let timeout_ms = match self.rng.below(5) {
                            0 => Some(0),
                            1 => None,
                            _ => Some(self.rng.range(20, 1_500)),
                        };
                        self.issue(
                            c,
                            node,
                            Op::Poll { after, timeout_ms },
                            ReqKind::Normal,
                            Some((tok, sid)),
                        );
                    }
                } else if roll < 75 {
                    if !cl.op_out {
                        let msg = match cl.retry.clone() {
                            Some(m) if self.msgs[&m].sender == sid => m,
                            _ => {
                                let keyed = self.rng.pm(500);
                                self.new_msg(sid, keyed)
                            }
                        };
                        self.clients[c].retry = None;
                        let op = self.send_op(&msg);
                        self.issue(c, node, op, ReqKind::Normal, Some((tok, sid)));
                    }
                } else if roll < 79 {
                    if !cl.op_out {
                        self.issue(c, node, Op::Leave, ReqKind::Normal, Some((tok, sid)));
                    }
                } else if roll < 87 {
                    if !cl.op_out {
                        let secret = self.fresh_secret();
                        let op = Op::Join {
                            auth: Some(tok),
                            secret,
                        };
                        self.issue(c, any_node, op, ReqKind::Normal, None);
                    }
                } else if roll < 90 {
                    if !cl.op_out {
                        // The client lost its token: an ordinary join.
                        let secret = self.fresh_secret();
                        self.issue(
                            c,
                            any_node,
                            Op::Join { auth: None, secret },
                            ReqKind::Normal,
                            None,
                        );
                    }
                } else {
                    // The client goes away from one of its waiting requests.
                    let cands: Vec<(u64, usize)> = self
                        .reqs
                        .iter()
                        .rev()
                        .take(64)
                        .filter(|(_, r)| {
                            r.client == c && r.state == ReqState::Waiting && r.cancel.is_some()
                        })
                        .map(|(&id, r)| (id, r.node))
                        .collect();
                    if !cands.is_empty() {
                        let (rid, node) = cands[self.rng.below(cands.len() as u64) as usize];
                        let d = self.rng.range(0, 3);
                        self.at(
                            self.now + d,
                            Ev::Input {
                                node,
                                inp: Input::Cancel(rid),
                            },
                        );
                    }
                }
            }
        }
        self.ops_left = self.ops_left.saturating_sub(1);
        if self.ops_left == 0 {
            let t = self.now + self.rng.range(0, 500);
            self.at(t, Ev::StartHeal);
        } else {
            let t = self.now + self.rng.range(0, self.k.op_gap_max_ms);
            self.at(t, Ev::ClientTick);
        }
    }

    // -- faults ------------------------------------------------------------------

    fn faults(&mut self) {
        let n = self.node_count() as u64;
        if self.rng.pm(self.k.link_drop_pm) {
            let a = self.rng.below(n) as usize;
            let b = (a + 1 + self.rng.below(n - 1) as usize) % n as usize;
            if self.link_ref(a, b).up {
                self.log(|| format!("fault: connection n{}-n{} drops", a + 1, b + 1));
                self.link_down(a, b);
            }
        }
        if self.rng.pm(self.k.pause_pm) {
            let i = self.rng.below(n) as usize;
            let ms = self.rng.range(50, self.k.pause_max_ms.max(50));
            self.pause(i, ms);
        }
        if self.rng.pm(self.k.crash_pm) {
            let i = self.rng.below(n) as usize;
            if !self.nodes[i].exiting && !self.nodes[i].paused {
                self.log(|| format!("fault: n{} crashes", i + 1));
                self.crash(i);
            }
        }
        if self.rng.pm(self.k.shutdown_pm) {
            let i = self.rng.below(n) as usize;
            if !self.nodes[i].exiting && !self.nodes[i].paused {
                self.shutdown(i);
            }
        }
    }

    /// Node `i` stops processing anything for `ms`.
    pub fn pause(&mut self, i: usize, ms: u64) {
        if self.nodes[i].paused || self.nodes[i].exiting {
            return;
        }
        self.log(|| format!("fault: n{} pauses for {ms} ms", i + 1));
        self.count("pauses");
        if ms > SILENT_DROP_MS {
            self.count("pauses past 3 heartbeats");
        }
        let now = self.now;
        let node = &mut self.nodes[i];
        node.pauses.push((now, u64::MAX));
        node.paused = true;
        node.pause_id += 1;
        let id = node.pause_id;
        self.at(self.now + ms, Ev::Resume { node: i, id });
        if ms > SILENT_DROP_MS {
            self.at(self.now + SILENT_DROP_MS, Ev::PauseDrop { node: i, id });
        }
    }

    pub fn resume(&mut self, i: usize) {
        let waited = self.nodes[i].deferred.len();
        self.log(|| format!("n{} resumes ({waited} inputs waited)", i + 1));
        self.nodes[i].paused = false;
        self.nodes[i].timer_at = None;
        let now = self.now;
        if let Some(p) = self.nodes[i].pauses.last_mut() {
            p.1 = now;
        }
        while let Some(inp) = self.nodes[i].deferred.pop_front() {
            let done = self.apply(i, inp);
            self.after(i, done);
        }
        self.nodes[i].core.handle_timeout(self.now);
        self.after(i, None);
        self.reconnect_all(i);
    }

    /// Connection a-b is lost: in-flight frames are gone, both ends hear of it.
    pub fn link_down(&mut self, a: usize, b: usize) {
        if !self.link_ref(a, b).up {
            return;
        }
        self.count("connections dropped");
        let l = self.link(a, b);
        l.up = false;
        l.epoch += 1;
        self.input(a, Input::PeerDown(b));
        self.input(b, Input::PeerDown(a));
        if self.k.auto_reconnect {
            self.schedule_link_up(a, b, 50, 2_000);
        }
    }

    fn schedule_link_up(&mut self, a: usize, b: usize, lo: u64, hi: u64) {
        let l = self.link(a, b);
        if l.up || l.reconnect_pending || l.held {
            return;
        }
        l.reconnect_pending = true;
        let t = self.now + self.rng.range(lo, hi);
        self.at(t, Ev::LinkUp { a, b });
    }

    fn reconnect_all(&mut self, i: usize) {
        for j in 0..self.node_count() {
            if j != i {
                self.schedule_link_up(i, j, 20, 300);
            }
        }
    }

    /// A new connection a-b: both ends see the other up at once.
    pub fn link_up(&mut self, a: usize, b: usize) {
        self.link(a, b).reconnect_pending = false;
        let l = *self.link_ref(a, b);
        let blocked = |n: &SimNode| n.paused || n.exiting;
        if l.up || l.held || blocked(&self.nodes[a]) || blocked(&self.nodes[b]) {
            return; // resume / restart / heal schedules it again
        }
        self.log(|| format!("connection n{}-n{} up", a + 1, b + 1));
        let l = self.link(a, b);
        l.up = true;
        l.epoch += 1;
        self.fifo[a][b] = self.now;
        self.fifo[b][a] = self.now;
        self.input(a, Input::PeerUp(b));
        self.input(b, Input::PeerUp(a));
        if self.phase == Phase::Heal {
            self.heal_links_up_at = self.now;
        }
    }

    /// The process dies: connections drop, its sessions vanish, its
    /// clients' connections break; it restarts with a fresh core.
    pub fn crash(&mut self, i: usize) {
        self.count("node exits (crash or drain)");
        for j in 0..self.node_count() {
            if j != i && self.link_ref(i, j).up {
                let l = self.link(i, j);
                l.up = false;
                l.epoch += 1;
                self.input(j, Input::PeerDown(i));
            }
        }
        let lost: Vec<u64> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.node == i && matches!(r.state, ReqState::Sent | ReqState::Waiting))
            .map(|(&id, _)| id)
            .collect();
        for rid in lost {
            self.reqs.get_mut(&rid).unwrap().state = ReqState::Lost;
            self.client_done(rid, None);
        }
        let ended: Vec<Sid> = std::mem::take(&mut self.nodes[i].live)
            .into_iter()
            .collect();
        for sid in ended {
            self.session_ended(sid);
        }
        let node = &mut self.nodes[i];
        node.core = Node::new(node.config.clone());
        node.inc += 1;
        node.deferred.clear();
        node.timer_at = None;
        node.paused = false;
        node.exiting = true;
        node.view_inc = vec![0; self.names.len()];
        let t = self.now + self.rng.range(100, 1_000);
        self.at(t, Ev::Restarted { node: i });
    }

    /// SIGTERM: drain, let the frames out, then exit (and restart).
    pub fn shutdown(&mut self, i: usize) {
        self.count("drains");
        self.log(|| format!("fault: n{} drains (SIGTERM)", i + 1));
        self.nodes[i].exiting = true;
        self.nodes[i].core.drain(self.now);
        self.after(i, None);
        let last = (0..self.node_count())
            .map(|j| self.fifo[i][j])
            .max()
            .unwrap_or(0);
        let t = last.max(self.now) + 1;
        self.at(t, Ev::ShutdownExit { node: i });
    }

    fn ping_tick(&mut self) {
        if matches!(self.phase, Phase::Final | Phase::Done) {
            return;
        }
        for a in 0..self.node_count() {
            if self.nodes[a].paused {
                continue;
            }
            let hlc = self.nodes[a].core.hlc();
            for b in 0..self.node_count() {
                let l = *self.link_ref(a, b);
                if a != b && l.up {
                    let t = (self.now + self.delay()).max(self.fifo[a][b]);
                    self.fifo[a][b] = t;
                    self.at(
                        t,
                        Ev::Input {
                            node: b,
                            inp: Input::Clock {
                                from: a,
                                epoch: l.epoch,
                                hlc,
                            },
                        },
                    );
                }
            }
        }
        self.at(self.now + HEARTBEAT_MS, Ev::PingTick);
    }

    // -- scripted control --------------------------------------------------------

    /// Brings every connection up (scripts start with this).
    pub fn connect_all(&mut self) {
        for a in 0..self.node_count() {
            for b in a + 1..self.node_count() {
                self.link_up(a, b);
            }
        }
    }

    /// Cuts the cluster in two; links across stay down until `heal_links`.
    pub fn partition(&mut self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.link_down(a, b);
                self.link(a, b).held = true;
            }
        }
    }

    /// Lifts the partition between `a` and `b` only, and connects them now.
    pub fn reconnect(&mut self, a: usize, b: usize) {
        self.link(a, b).held = false;
        self.link_up(a, b);
    }

    /// Frames from `a` to `b` take `ms` longer from now on (0 to undo).
    pub fn set_delay(&mut self, a: usize, b: usize, ms: u64) {
        self.extra[a][b] = ms;
    }

    /// Lifts every partition and reconnects.
    pub fn heal_links(&mut self) {
        for a in 0..self.node_count() {
            for b in a + 1..self.node_count() {
                self.link(a, b).held = false;
                self.schedule_link_up(a, b, 1, 20);
            }
        }
    }

    pub fn client_token(&self, c: usize) -> Option<(Token, Sid)> {
        self.clients[c].token.clone()
    }

    /// Client `c` (pair/side from its slot) joins at `node`.
    pub fn join(&mut self, c: usize, node: usize, auth: Option<Token>) -> u64 {
        let secret = self.fresh_secret();
        self.issue(c, node, Op::Join { auth, secret }, ReqKind::Normal, None)
    }

    pub fn poll(&mut self, c: usize, node: usize, timeout_ms: Option<u64>) -> u64 {
        let (tok, sid) = self.client_token(c).expect("client has a session");
        let after = self.sessions[&sid].seen_max;
        self.issue(
            c,
            node,
            Op::Poll { after, timeout_ms },
            ReqKind::Normal,
            Some((tok, sid)),
        )
    }

    pub fn send(&mut self, c: usize, node: usize, keyed: bool) -> u64 {
        let (tok, sid) = self.client_token(c).expect("client has a session");
        let msg = self.new_msg(sid, keyed);
        let op = self.send_op(&msg);
        self.issue(c, node, op, ReqKind::Normal, Some((tok, sid)))
    }

    /// Client `c` sends the message of request `rid` again, with the same
    /// idempotency key, at `node`.
    pub fn resend(&mut self, c: usize, node: usize, rid: u64) -> u64 {
        let Op::Send { msg, .. } = self.reqs[&rid].op.clone() else {
            panic!("request {rid} is not a send");
        };
        let (tok, sid) = self.client_token(c).expect("client has a session");
        let op = self.send_op(&msg);
        self.issue(c, node, op, ReqKind::Normal, Some((tok, sid)))
    }

    pub fn leave(&mut self, c: usize, node: usize) -> u64 {
        let (tok, sid) = self.client_token(c).expect("client has a session");
        self.issue(c, node, Op::Leave, ReqKind::Normal, Some((tok, sid)))
    }

    /// Status of an answered request (None while it waits).
    pub fn status(&self, rid: u64) -> Option<u16> {
        self.reqs[&rid].reply.as_ref().map(|r| r.status)
    }

    pub fn body(&self, rid: u64) -> String {
        self.reqs[&rid].reply.as_ref().map_or(String::new(), |r| {
            String::from_utf8_lossy(&r.body).into_owned()
        })
    }

    /// Client index of slot (pair, side, n).
    pub fn client_of(&self, pair: usize, side: Side, n: usize) -> usize {
        self.clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.pair == pair && c.side == side)
            .nth(n)
            .map(|(i, _)| i)
            .unwrap()
    }

    /// Live sessions of (pair, side), from the nodes themselves.
    pub fn live_sessions(&self, pair: usize, side: Side) -> Vec<Sid> {
        self.sessions
            .iter()
            .filter(|(_, r)| r.live && r.pair == pair && r.side == side)
            .map(|(&s, _)| s)
            .collect()
    }

    /// Events a client saw for a session, in seq order.
    pub fn seen(&self, sid: Sid) -> Vec<Seen> {
        self.sessions[&sid].events.values().cloned().collect()
    }

    // -- heal and checks ---------------------------------------------------------

    fn start_heal(&mut self) {
        if self.phase != Phase::Run {
            return;
        }
        self.phase = Phase::Heal;
        self.log(|| "== heal: every node resumes, every link comes back".into());
        for i in 0..self.node_count() {
            if self.nodes[i].paused {
                self.resume(i);
            }
        }
        for a in 0..self.node_count() {
            for b in a + 1..self.node_count() {
                self.link(a, b).held = false;
                self.schedule_link_up(a, b, 1, 100);
            }
        }
        self.heal_links_up_at = self.now;
        self.heal_tick();
    }

    /// Keeps every live session with a known token polled, so that none
    /// expires while the cluster settles.
    fn heal_tick(&mut self) {
        if self.phase != Phase::Heal {
            return;
        }
        let sids: Vec<Sid> = self
            .sessions
            .iter()
            .filter(|(_, r)| r.live && r.token.is_some() && !r.heal_polling)
            .map(|(&s, _)| s)
            .collect();
        for sid in sids {
            self.heal_poll(sid);
        }
        self.at(self.now + 200, Ev::HealTick);
    }

    fn heal_poll(&mut self, sid: Sid) {
        let Some(rec) = self.sessions.get_mut(&sid) else {
            return;
        };
        if !rec.live || rec.heal_polling {
            return;
        }
        rec.heal_polling = true;
        let (tok, after, owner) = (
            rec.token.clone().unwrap(),
            rec.seen_max,
            rec.owner.unwrap_or(0),
        );
        let op = Op::Poll {
            after,
            timeout_ms: Some(self.k.poll_timeout_ms),
        };
        self.issue(owner, sid.node, op, ReqKind::Heal, Some((tok, sid)));
    }

    fn outstanding_normal(&self) -> Vec<u64> {
        self.reqs
            .iter()
            .filter(|(_, r)| {
                r.kind == ReqKind::Normal && matches!(r.state, ReqState::Sent | ReqState::Waiting)
            })
            .map(|(&id, _)| id)
            .collect()
    }

    fn quiescent(&self) -> bool {
        self.now >= self.heal_links_up_at + HEAL_SETTLE_MS
            && self.frames_in_flight == 0
            && self
                .links
                .iter()
                .enumerate()
                .all(|(a, row)| row.iter().enumerate().all(|(b, l)| b <= a || l.up))
            && self
                .nodes
                .iter()
                .all(|n| n.core.requests_pending() == 0 && !n.exiting && !n.paused)
            && self.outstanding_normal().is_empty()
    }

    /// Heal, settle, final polls, invariants. Used by random runs and scripts.
    pub fn finish(&mut self) {
        if self.phase == Phase::Run {
            self.start_heal();
        }
        let deadline = self.now + HEAL_MS_MAX;
        while !self.quiescent() {
            if self.now > deadline || !self.step() || self.events > EVENTS_MAX {
                let stuck: Vec<String> = self
                    .outstanding_normal()
                    .iter()
                    .take(5)
                    .map(|id| {
                        let r = &self.reqs[id];
                        format!(
                            "req {id} c{} at n{} {} issued {}",
                            r.client,
                            r.node + 1,
                            r.op,
                            r.issued
                        )
                    })
                    .collect();
                let pending: Vec<usize> = self
                    .nodes
                    .iter()
                    .map(|n| n.core.requests_pending())
                    .collect();
                let msg = format!(
                    "seed {}: no quiescence by {} ms: frames in flight {}, node requests pending {:?}, unanswered {:?}",
                    self.seed, self.now, self.frames_in_flight, pending, stuck
                );
                self.violate(msg);
                self.phase = Phase::Done;
                return;
            }
        }
        self.phase = Phase::Final;
        self.log(|| "== quiescent: final polls and checks".into());
        // Heal polls re-issued in this very step have not reached their
        // node yet: their clients stop polling.
        for r in self.reqs.values_mut() {
            if r.kind == ReqKind::Heal && r.state == ReqState::Sent {
                r.state = ReqState::Cancelled;
            }
        }
        // A final poll of every live session, at once, at its home node.
        let live: Vec<Sid> = self
            .sessions
            .iter()
            .filter(|(_, r)| r.live)
            .map(|(&s, _)| s)
            .collect();
        for sid in live {
            let rec = &self.sessions[&sid];
            let Some(tok) = rec.token.clone() else {
                let msg = format!(
                    "seed {}: live session {sid} was never handed to a client",
                    self.seed
                );
                self.violate(msg);
                continue;
            };
            let op = Op::Poll {
                after: rec.seen_max,
                timeout_ms: Some(0),
            };
            let owner = rec.owner.unwrap_or(0);
            let rid = self.issue(owner, sid.node, op, ReqKind::Final, Some((tok, sid)));
            // Straight to the node, without the client delay.
            self.queue
                .retain(|_, ev| !matches!(ev, Ev::Input { inp: Input::Op(id), .. } if *id == rid));
            self.input(sid.node, Input::Op(rid));
            if self.status(rid) != Some(200) {
                let msg = format!(
                    "seed {}: final poll of live {sid} answered {:?}",
                    self.seed,
                    self.status(rid)
                );
                self.violate(msg);
            }
        }
        self.check_state();
        // Let the answers of older forwarded polls travel, then check that
        // every request got its answer.
        let until = self.now + 2_000;
        while self.frames_in_flight > 0 && self.now <= until && self.step() {}
        self.check_liveness();
        self.phase = Phase::Done;
        self.count_outcomes();
    }

    fn check_state(&mut self) {
        let seed = self.seed;
        let mut v = Vec::new();
        // Nodes' own view, straight from inspect().
        let mut views: BTreeMap<Sid, (usize, Side, Option<Sid>, u64)> = BTreeMap::new();
        for i in 0..self.node_count() {
            let inc = self.nodes[i].inc;
            for s in self.nodes[i].core.inspect() {
                let sid = Sid {
                    node: i,
                    inc,
                    key: s.addr.key,
                    gen: s.addr.gen,
                };
                let pair: usize = s.pair[1..].parse().unwrap();
                views.insert(
                    sid,
                    (
                        pair,
                        s.side,
                        s.peer.map(|a| self.addr_sid(i, a)),
                        s.last_seq,
                    ),
                );
            }
        }
        // 1. At most one live session per (pair, side).
        let mut holders: BTreeMap<(usize, Side), Vec<Sid>> = BTreeMap::new();
        for (&sid, &(pair, side, _, _)) in &views {
            holders.entry((pair, side)).or_default().push(sid);
        }
        for ((pair, side), sids) in &holders {
            if sids.len() > 1 {
                let claims: Vec<String> = sids
                    .iter()
                    .map(|s| format!("{s} (claim {})", self.sessions[s].hlc))
                    .collect();
                v.push(format!(
                    "inv1: p{pair}{} held by {} live sessions: {}",
                    side.as_str(),
                    sids.len(),
                    claims.join(", ")
                ));
            }
        }
        // 2. Links are symmetric among live sessions; both sides live => linked.
        for (&sid, &(pair, side, peer, _)) in &views {
            if let Some(p) = peer {
                match views.get(&p) {
                    None => v.push(format!(
                        "inv2: {sid} (p{pair}{}) linked to {p}, which is not live",
                        side.as_str()
                    )),
                    Some(&(_, _, back, _)) if back != Some(sid) => v.push(format!(
                        "inv2: {sid} (p{pair}{}) linked to {p}, which links to {back:?}",
                        side.as_str()
                    )),
                    _ => {}
                }
            }
        }
        for pair in 0..self.pairs.len() {
            if let (Some([a]), Some([b])) = (
                holders.get(&(pair, Side::A)).map(Vec::as_slice),
                holders.get(&(pair, Side::B)).map(Vec::as_slice),
            ) {
                let (pa, pb) = (views[a].2, views[b].2);
                if pa != Some(*b) || pb != Some(*a) {
                    v.push(format!(
                        "inv2: p{pair} both sides live after the heal but not linked: a {a} -> {pa:?}, b {b} -> {pb:?}"
                    ));
                }
            }
        }
        // 3. What a live session's client was told matches its link, and a
        //    session whose peer ended was told peer_offline.
        for (&sid, &(pair, side, peer, last_seq)) in &views {
            let rec = &self.sessions[&sid];
            let seqs: Vec<u64> = rec.events.keys().copied().collect();
            if seqs != (1..=last_seq).collect::<Vec<_>>() {
                v.push(format!(
                    "inv3: {sid} issued seqs 1..={last_seq}, its client saw {}",
                    compact(&seqs)
                ));
            }
            let online = rec
                .events
                .values()
                .rev()
                .find_map(|e| match e {
                    Seen::Online => Some(true),
                    Seen::Offline(_) => Some(false),
                    Seen::Msg(_) => None,
                })
                .unwrap_or(false);
            if online != peer.is_some() {
                v.push(format!(
                    "inv3: {sid} (p{pair}{}) client was last told peer {} but the session's peer is {peer:?}",
                    side.as_str(),
                    if online { "online" } else { "offline" },
                ));
            }
            // The events alternate online / offline.
            let mut state = false;
            for (seq, e) in &rec.events {
                match e {
                    Seen::Online if state => v.push(format!(
                        "inv3: {sid} got peer_online at seq {seq} while online"
                    )),
                    Seen::Offline(_) if !state => v.push(format!(
                        "inv3: {sid} got peer_offline at seq {seq} while offline"
                    )),
                    Seen::Online => state = true,
                    Seen::Offline(_) => state = false,
                    Seen::Msg(_) => {}
                }
            }
            for s in &rec.switches {
                // A loser whose client never got its token (its join was
                // answered 409) was never anyone's peer as far as clients
                // can tell; switching away from it needs no peer_offline.
                let from_handed = self
                    .sessions
                    .get(&s.from)
                    .and_then(|r| r.handed_at)
                    .is_some_and(|t| t <= s.at);
                let from_ended = !views.contains_key(&s.from) && from_handed;
                let told = s.hi > s.lo
                    && rec
                        .events
                        .range(s.lo + 1..=s.hi)
                        .any(|(_, e)| matches!(e, Seen::Offline(_)));
                if from_ended && !told {
                    v.push(format!(
                        "inv3: {sid} (p{pair}{}) was linked to {} which ended, and was relinked to {} at {} ms without a peer_offline",
                        side.as_str(),
                        s.from,
                        s.to,
                        s.at
                    ));
                }
            }
        }
        // 4. No 202'd message is lost while both sessions live; none is
        //    delivered twice or to the wrong session.
        let mut found: HashMap<&str, Vec<(Sid, u64)>> = HashMap::new();
        for (&sid, rec) in &self.sessions {
            for (&seq, e) in &rec.events {
                if let Seen::Msg(text) = e {
                    found.entry(text.as_str()).or_default().push((sid, seq));
                }
            }
        }
        for (msg, m) in &self.msgs {
            let hits: Vec<(&str, Sid, u64)> = m
                .attempts
                .iter()
                .flat_map(|t| {
                    found
                        .get(t.as_str())
                        .into_iter()
                        .flatten()
                        .map(move |&(s, q)| (t.as_str(), s, q))
                })
                .collect();
            // Twice into one session: never. Into two sessions (the sender's
            // peer changed between attempts): only when the client was not
            // told something definite about the earlier attempt (it got 503
            // or gave up), so it had to retry.
            let mut per_session: BTreeMap<Sid, Vec<&str>> = BTreeMap::new();
            for &(text, s, _) in &hits {
                per_session.entry(s).or_default().push(text);
            }
            for (s, texts) in &per_session {
                if texts.len() > 1 {
                    v.push(format!(
                        "inv4: message {msg} delivered {} times into {s}: attempts {texts:?}",
                        texts.len()
                    ));
                }
            }
            if per_session.len() > 1 {
                let last_hit = m
                    .attempts
                    .iter()
                    .rposition(|t| hits.iter().any(|h| h.0 == t));
                for &(text, s, _) in &hits {
                    let pos = m.attempts.iter().position(|t| t == text);
                    let status = self.attempts[text].status;
                    if pos < last_hit && matches!(status, Some(202 | 409 | 429)) {
                        v.push(format!(
                            "inv4: message {msg} attempt {text} was delivered into {s} but answered {status:?}, and a later attempt was delivered into another session"
                        ));
                    }
                }
            }
            // A 202 means a client will read it: a message no client saw
            // must not have been answered 202 into a session that ended
            // before any client held it (a join that lost its side). (A
            // retry answered 202 from the sender's key memory delivers
            // nothing; the message then shows where the first attempt went.)
            for text in m.attempts.iter().filter(|_| hits.is_empty()) {
                let a = &self.attempts[text];
                if a.status != Some(202) {
                    continue;
                }
                if let Some(r) = a.receiver.flatten() {
                    let orphan = self
                        .sessions
                        .get(&r)
                        .is_some_and(|rec| rec.handed_at.is_none() && !rec.live);
                    if orphan {
                        v.push(format!(
                            "inv4: message {text} answered 202 into {r}, which ended before any client held it"
                        ));
                    }
                }
            }
            for &(text, s, _) in &hits {
                let want = self.attempts[text].receiver.flatten();
                if want != Some(s) {
                    v.push(format!(
                        "inv4: message {text} landed in {s}, but its sender's peer was {want:?}"
                    ));
                }
            }
            if !m.accepted || !hits.is_empty() || !views.contains_key(&m.sender) {
                continue;
            }
            let receivers: Vec<Option<Sid>> = m
                .attempts
                .iter()
                .filter_map(|t| self.attempts[t].receiver)
                .collect();
            let all_live = !receivers.is_empty()
                && receivers
                    .iter()
                    .all(|r| r.is_some_and(|r| views.contains_key(&r)));
            if all_live {
                v.push(format!(
                    "inv4: message {msg} answered 202 from {} to {:?}; both live, never seen by the receiver",
                    m.sender, receivers
                ));
            }
        }
        for (sid, rec) in &self.sessions {
            if rec.joined_online && rec.events.get(&1).is_some_and(|e| *e != Seen::Online) {
                v.push(format!(
                    "join: {sid} joined with peer online, but its first event is {:?}",
                    rec.events[&1]
                ));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.core.requests_pending() != 0 {
                v.push(format!(
                    "leak: n{} holds {} pending requests at quiescence",
                    i + 1,
                    n.core.requests_pending()
                ));
            }
        }
        for msg in v {
            self.violate(format!("seed {seed}: {msg}"));
        }
    }

    fn count_outcomes(&mut self) {
        let mut c: Vec<&'static str> = Vec::new();
        for r in self.reqs.values() {
            let st = r.reply.as_ref().map(|r| r.status);
            c.push(match (&r.op, st) {
                (Op::Join { auth: Some(_), .. }, Some(200)) => "joins resumed (200)",
                (Op::Join { .. }, Some(201)) => "joins (201)",
                (Op::Join { .. }, Some(409)) => "joins refused (409)",
                (Op::Send { .. }, Some(202)) => "sends accepted (202)",
                (Op::Send { .. }, Some(409)) => "sends peer_offline (409)",
                (Op::Send { .. }, Some(429)) => "sends peer_busy (429)",
                (Op::Poll { .. }, Some(404)) => "polls 404",
                (_, Some(503)) => "answers 503",
                (Op::Leave, Some(204)) => "leaves (204)",
                (_, None) if r.state == ReqState::Cancelled => "requests cancelled",
                _ => continue,
            });
        }
        for rec in self.sessions.values() {
            for e in rec.events.values() {
                if let Seen::Offline(reason) = e {
                    c.push(match reason.as_str() {
                        "left" => "peer_offline left",
                        "expired" => "peer_offline expired",
                        "node_down" => "peer_offline node_down",
                        _ => "peer_offline shutdown",
                    });
                }
            }
        }
        for what in c {
            self.count(what);
        }
        let lost: u64 = self
            .nodes
            .iter()
            .map(|n| n.core.stats().conflicts_lost)
            .sum();
        *self.counters.entry("conflicts lost").or_default() += lost;
    }

    fn check_liveness(&mut self) {
        let stuck: Vec<String> = self
            .reqs
            .iter()
            .filter(|(_, r)| matches!(r.state, ReqState::Sent | ReqState::Waiting))
            .map(|(id, r)| {
                format!(
                    "req {id} c{} at n{} {} ({:?}) issued at {}",
                    r.client,
                    r.node + 1,
                    r.op,
                    r.kind,
                    r.issued
                )
            })
            .collect();
        for s in stuck.into_iter().take(5) {
            self.violate(format!("seed {}: liveness: never answered: {s}", self.seed));
        }
    }

    pub fn dump_trace(&self) -> String {
        self.trace.as_ref().map_or(String::new(), |t| t.join("\n"))
    }
}

/// `1..=5,7` style.
fn compact(seqs: &[u64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        while i + 1 < seqs.len() && seqs[i + 1] == seqs[i] + 1 {
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if seqs[i] == start {
            out += &start.to_string();
        } else {
            out += &format!("{start}..={}", seqs[i]);
        }
        i += 1;
    }
    if out.is_empty() {
        "nothing".into()
    } else {
        out
    }
}

/// Runs one random seed; returns its violations.
pub fn run_seed(seed: u64, trace: bool) -> Sim {
    let mut sim = Sim::random(seed, trace);
    sim.run_random();
    sim
}
