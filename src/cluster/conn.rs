//! One connection to a peer node, as a sans-IO state machine in the manner
//! of quinn-proto: inputs are `handle_*(now, ..)`, outputs are `poll_*()`
//! and [`PeerConn::take_transmit`], and [`PeerConn::poll_timeout`] says when
//! to call back. It never reads a clock, draws randomness or touches a
//! socket.
//!
//! # What it does
//!
//! - Framing: received bytes are cut into frames, with
//!   [`HANDSHAKE_FRAME_BYTES_MAX`] as the limit until the peer is
//!   authenticated and [`FRAME_BYTES_MAX`] after. The receive buffer holds
//!   at most one partial frame, so it never exceeds the limit plus the
//!   4-byte prefix (beyond the bytes of the current call).
//! - The handshake ([`crate::cluster::handshake`]), then [`ConnEvent::Up`].
//! - Heartbeats: a `Ping` every heartbeat, carrying the node's hybrid
//!   logical clock and a sequence number. A received `Ping` is answered with
//!   a `Pong` here; a `Pong` measures the round trip. Both report the peer's
//!   clock as [`ConnEvent::PeerClock`].
//! - Silence: a peer from which nothing at all has arrived for
//!   [`SILENT_HEARTBEATS`] heartbeats is down ([`ConnError::Silent`]). Any
//!   received byte counts as life, so a long frame still arriving keeps
//!   the connection up.
//! - The handshake deadline: [`HANDSHAKE_HEARTBEATS`] heartbeats, and at
//!   least [`HANDSHAKE_TIMEOUT_MS_MIN`].
//! - The outbound queue: encoded frames wait in one byte buffer until the
//!   driver takes them. A send finding [`PEER_QUEUE_BYTES_MAX`] bytes or
//!   more already waiting fails with [`ConnError::QueueFull`] and ends the
//!   connection: a peer that stops reading is dropped (and its links fire)
//!   instead of being buffered for without limit.
//!
//! # Driving it
//!
//! The smol driver, per connection:
//!
//! 1. [`PeerConn::new`], then write [`PeerConn::take_transmit`] (our `Hello`).
//! 2. On each read: [`PeerConn::handle_bytes`] with the bytes (reads of a
//!    bounded size, e.g. [`crate::limits::READ_CHUNK_BYTES`]), then drain
//!    [`PeerConn::poll_event`] (this keeps the event queue as small as one
//!    read's frames), then write what [`PeerConn::take_transmit`] returns.
//! 3. Sleep until [`PeerConn::poll_timeout`]; then
//!    [`PeerConn::handle_timeout`] with the node's clock, and write.
//! 4. Take the next batch of bytes only after the previous one is written.
//!    Bytes the driver holds are not counted by the queue bound, so taking
//!    early would defeat it.
//!
//! Any error marked fatal by [`ConnError::is_fatal`] means: log it, close
//! the socket, treat the peer as down. The node itself keeps serving.

use crate::cluster::frame::{
    decode, encode, DecodeError, Frame, FRAME_BYTES_MAX, FRAME_PREFIX_BYTES,
    HANDSHAKE_FRAME_BYTES_MAX, NONCE_BYTES,
};
use crate::cluster::handshake::{Handshake, HandshakeError, HandshakeStep, Role};
use crate::proto::ids::NodeName;
use std::collections::VecDeque;
use std::fmt;

/// Bytes of encoded frames that may wait to be written to one peer. A send
/// that finds this many or more waiting fails, so the queue holds at most
/// this plus one frame ([`FRAME_PREFIX_BYTES`] + [`FRAME_BYTES_MAX`]).
pub const PEER_QUEUE_BYTES_MAX: usize = 32 << 20;
/// Heartbeats without a received byte after which the peer is down
/// (API.md §3: "within 3 heartbeats").
pub const SILENT_HEARTBEATS: u64 = 3;
/// Heartbeats the handshake may take before the connection is dropped.
pub const HANDSHAKE_HEARTBEATS: u64 = 3;
/// Shortest handshake deadline, whatever the heartbeat: a handshake takes
/// two round trips and an HMAC, which a very short `--heartbeat` must not
/// make impossible on a slow link.
pub const HANDSHAKE_TIMEOUT_MS_MIN: u64 = 1_000;
/// Shortest heartbeat the connection runs with; a 0 from the configuration
/// would otherwise mean a `Ping` on every call.
pub const HEARTBEAT_MS_MIN: u64 = 1;
/// Capacity the receive buffer keeps while it is empty. After a large frame
/// the buffer is given back, so an idle connection stays small.
pub const RX_IDLE_CAPACITY_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(PEER_QUEUE_BYTES_MAX >= HANDSHAKE_FRAME_BYTES_MAX);
const _: () = assert!(SILENT_HEARTBEATS >= 2);

/// Something that happened on the connection, for the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// The handshake completed: the peer is authenticated under this name.
    /// Always the first event, and only once.
    Up {
        /// The peer's node name.
        peer: NodeName,
    },
    /// A node frame (`Lookup` … `Cancel`) from the peer. Handshake and
    /// heartbeat frames are handled inside the connection.
    Frame(Frame),
    /// The peer's hybrid logical clock, seen in a `Ping` or `Pong`; the node
    /// sets its own clock to at least this.
    PeerClock(u64),
}

/// Why a call on a connection failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// Fatal: the peer sent bytes that are not a frame.
    Decode(DecodeError),
    /// Fatal: the handshake failed.
    Handshake(HandshakeError),
    /// Fatal: the handshake did not complete in time.
    HandshakeTimeout,
    /// Fatal: nothing was received for [`SILENT_HEARTBEATS`] heartbeats.
    Silent,
    /// Fatal: the outbound queue is full; the peer is not reading.
    QueueFull,
    /// Fatal: the peer sent a frame that has no place after the handshake
    /// (`Hello` or `Proof`); names it.
    Unexpected(&'static str),
    /// Not fatal, nothing sent: [`PeerConn::send`] before the handshake
    /// completed. Node frames wait for [`ConnEvent::Up`].
    NotUp,
    /// Not fatal, nothing sent: the frame encodes to this many bytes (prefix
    /// excluded), over [`FRAME_BYTES_MAX`]; no peer would accept it.
    FrameTooLarge(usize),
    /// The connection already failed with a fatal error; drop it.
    Closed,
}

impl ConnError {
    /// Whether the connection is finished: log the error once, close the
    /// socket, and treat the peer as down.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ConnError::NotUp | ConnError::FrameTooLarge(_))
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Decode(e) => write!(f, "{e}"),
            ConnError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ConnError::HandshakeTimeout => write!(f, "handshake not complete in time"),
            ConnError::Silent => write!(
                f,
                "peer silent for {SILENT_HEARTBEATS} heartbeats, considered down"
            ),
            ConnError::QueueFull => write!(
                f,
                "peer is not reading: over {PEER_QUEUE_BYTES_MAX} bytes queued for it"
            ),
            ConnError::Unexpected(what) => {
                write!(f, "unexpected {what} after the handshake")
            }
            ConnError::NotUp => write!(f, "connection not up yet"),
            ConnError::FrameTooLarge(n) => write!(
                f,
                "frame of {n} bytes over the {FRAME_BYTES_MAX}-byte limit, not sent"
            ),
            ConnError::Closed => write!(f, "connection already closed"),
        }
    }
}

impl std::error::Error for ConnError {}

impl From<DecodeError> for ConnError {
    fn from(e: DecodeError) -> ConnError {
        ConnError::Decode(e)
    }
}

impl From<HandshakeError> for ConnError {
    fn from(e: HandshakeError) -> ConnError {
        ConnError::Handshake(e)
    }
}

#[derive(Debug)]
enum State {
    Handshaking(Handshake),
    Up { peer: NodeName },
    Closed,
}

/// One connection to a peer node. See the module documentation.
#[derive(Debug)]
pub struct PeerConn {
    state: State,
    role: Role,
    heartbeat_ms: u64,
    /// Received bytes not yet decoded: at most one partial frame between
    /// calls.
    rx: Vec<u8>,
    /// Encoded frames waiting for the driver; the outbound queue.
    tx: Vec<u8>,
    /// Events not yet polled. Bounded by what one `handle_bytes` call
    /// decodes, because the driver drains it after each call.
    events: VecDeque<ConnEvent>,
    handshake_deadline_ms: u64,
    /// When a byte last arrived; silence is measured from here.
    last_rx_ms: u64,
    /// When the next `Ping` is due (once up).
    next_ping_ms: u64,
    /// Sequence number of the next `Ping`.
    ping_seq: u64,
    /// The last `Ping` sent and not yet answered: its seq and send time.
    ping_in_flight: Option<(u64, u64)>,
    rtt_ms: Option<u64>,
    /// The latest clock reading the node gave us, for the `Pong`s we send
    /// between timeouts. Receivers only ever raise their clock to a
    /// reading, so one up to a heartbeat old is harmless.
    hlc: u64,
}

impl PeerConn {
    /// Opens a connection's state at `now_ms`, our `Hello` already queued
    /// (write [`PeerConn::take_transmit`] at once).
    ///
    /// `nonce` must be fresh OS randomness. `dialed` is, for a dialer, the
    /// node it dialed (the peer must carry that name); `None` for an
    /// acceptor. `heartbeat_ms` is `--heartbeat` (at least
    /// [`HEARTBEAT_MS_MIN`] is used).
    pub fn new(
        now_ms: u64,
        role: Role,
        me: NodeName,
        cookie: Vec<u8>,
        nonce: [u8; NONCE_BYTES],
        dialed: Option<NodeName>,
        heartbeat_ms: u64,
    ) -> PeerConn {
        let heartbeat_ms = heartbeat_ms.max(HEARTBEAT_MS_MIN);
        let (handshake, hello) = Handshake::new(role, me, cookie, nonce, dialed);
        let handshake_ms = heartbeat_ms
            .saturating_mul(HANDSHAKE_HEARTBEATS)
            .max(HANDSHAKE_TIMEOUT_MS_MIN);
        let mut tx = Vec::new();
        encode(&hello, &mut tx);
        PeerConn {
            state: State::Handshaking(handshake),
            role,
            heartbeat_ms,
            rx: Vec::new(),
            tx,
            events: VecDeque::new(),
            handshake_deadline_ms: now_ms.saturating_add(handshake_ms),
            last_rx_ms: now_ms,
            next_ping_ms: u64::MAX,
            ping_seq: 0,
            ping_in_flight: None,
            rtt_ms: None,
            hlc: 0,
        }
    }

    /// Our end of the connection.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The authenticated peer, once up.
    pub fn peer(&self) -> Option<&NodeName> {
        match &self.state {
            State::Up { peer } => Some(peer),
            _ => None,
        }
    }

    /// Whether the handshake completed and no fatal error happened since.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    /// Whether a fatal error happened; every call now fails with
    /// [`ConnError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The last measured Ping-to-Pong round trip, for metrics.
    pub fn rtt_ms(&self) -> Option<u64> {
        self.rtt_ms
    }

    /// Bytes waiting in the outbound queue.
    pub fn transmit_bytes(&self) -> usize {
        self.tx.len()
    }

    /// Handles bytes read from the socket at `now_ms`.
    ///
    /// `known` says whether a node name is one of this node's configured
    /// peers; it is asked once, about the name in the peer's `Hello`.
    /// Decoded frames become events ([`PeerConn::poll_event`]); answers
    /// (our `Proof`, `Pong`s) go to the outbound queue.
    ///
    /// # Errors
    ///
    /// Fatal ones: [`ConnError::Decode`] (a malformed, oversized or unknown
    /// frame), [`ConnError::Handshake`], [`ConnError::Unexpected`],
    /// [`ConnError::QueueFull`] (no room for a `Pong`), and
    /// [`ConnError::Closed`]. After one, pending events and bytes are
    /// discarded.
    pub fn handle_bytes(
        &mut self,
        now_ms: u64,
        bytes: &[u8],
        known: &dyn Fn(&NodeName) -> bool,
    ) -> Result<(), ConnError> {
        self.check_open()?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.last_rx_ms = self.last_rx_ms.max(now_ms);
        self.rx.extend_from_slice(bytes);
        let result = self.decode_frames(now_ms, known);
        self.fail_on_error(result)
    }

    fn decode_frames(
        &mut self,
        now_ms: u64,
        known: &dyn Fn(&NodeName) -> bool,
    ) -> Result<(), ConnError> {
        let mut pos = 0;
        let result = loop {
            // The limit can change between two frames of one read: the
            // peer's Proof and its first node frames may arrive together.
            let frame_bytes_max = if self.is_up() {
                FRAME_BYTES_MAX
            } else {
                HANDSHAKE_FRAME_BYTES_MAX
            };
            match decode(&self.rx[pos..], frame_bytes_max) {
                Ok(Some((frame, consumed))) => {
                    pos += consumed;
                    if let Err(e) = self.handle_frame(now_ms, frame, known) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        self.rx.drain(..pos);
        if self.rx.is_empty() && self.rx.capacity() > RX_IDLE_CAPACITY_BYTES_MAX {
            self.rx = Vec::new();
        }
        result
    }

    fn handle_frame(
        &mut self,
        now_ms: u64,
        frame: Frame,
        known: &dyn Fn(&NodeName) -> bool,
    ) -> Result<(), ConnError> {
        match &mut self.state {
            State::Handshaking(handshake) => match handshake.handle(frame, known)? {
                HandshakeStep::Send(proof) => self.queue(&proof),
                HandshakeStep::Done { peer } => {
                    self.state = State::Up { peer: peer.clone() };
                    self.events.push_back(ConnEvent::Up { peer });
                    // The first Ping goes out at once: it tells the peer our
                    // clock and measures the round trip early.
                    self.next_ping_ms = now_ms;
                    Ok(())
                }
            },
            State::Up { .. } => match frame {
                Frame::Hello { .. } | Frame::Proof { .. } => {
                    Err(ConnError::Unexpected(frame.name()))
                }
                Frame::Ping { hlc, seq } => {
                    self.queue(&Frame::Pong { hlc: self.hlc, seq })?;
                    self.events.push_back(ConnEvent::PeerClock(hlc));
                    Ok(())
                }
                Frame::Pong { hlc, seq } => {
                    // Only the latest Ping is timed; an answer to an older
                    // one (after a slow round trip) is just life.
                    if let Some((sent_seq, sent_ms)) = self.ping_in_flight {
                        if sent_seq == seq {
                            self.rtt_ms = Some(now_ms.saturating_sub(sent_ms));
                            self.ping_in_flight = None;
                        }
                    }
                    self.events.push_back(ConnEvent::PeerClock(hlc));
                    Ok(())
                }
                other => {
                    self.events.push_back(ConnEvent::Frame(other));
                    Ok(())
                }
            },
            State::Closed => Err(ConnError::Closed),
        }
    }

    /// The next event, if any. Drain after every `handle_bytes`.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// Queues a node frame for the peer.
    ///
    /// # Errors
    ///
    /// [`ConnError::NotUp`] before [`ConnEvent::Up`] and
    /// [`ConnError::FrameTooLarge`] for a frame no peer accepts: nothing is
    /// queued and the connection goes on. [`ConnError::QueueFull`] when
    /// [`PEER_QUEUE_BYTES_MAX`] bytes or more already wait: fatal, the
    /// connection is closed. [`ConnError::Closed`] after a fatal error.
    pub fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        self.check_open()?;
        if !self.is_up() {
            return Err(ConnError::NotUp);
        }
        let result = self.queue(frame);
        self.fail_on_error(result)
    }

    /// Encodes `frame` into the outbound queue, whatever the state.
    fn queue(&mut self, frame: &Frame) -> Result<(), ConnError> {
        if self.tx.len() >= PEER_QUEUE_BYTES_MAX {
            return Err(ConnError::QueueFull);
        }
        let start = self.tx.len();
        encode(frame, &mut self.tx);
        let len = self.tx.len() - start - FRAME_PREFIX_BYTES;
        if len > FRAME_BYTES_MAX {
            self.tx.truncate(start);
            return Err(ConnError::FrameTooLarge(len));
        }
        Ok(())
    }

    /// Takes the bytes to write to the socket (possibly none). Call it again
    /// only once they are written: see the module documentation.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tx)
    }

    /// When [`PeerConn::handle_timeout`] is due next (same clock as
    /// `now_ms`); `None` once closed.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Handshaking(_) => Some(self.handshake_deadline_ms),
            State::Up { .. } => Some(self.next_ping_ms.min(self.silent_at_ms())),
            State::Closed => None,
        }
    }

    fn silent_at_ms(&self) -> u64 {
        self.last_rx_ms
            .saturating_add(self.heartbeat_ms.saturating_mul(SILENT_HEARTBEATS))
    }

    /// Runs what is due at `now_ms`: the handshake deadline, the silence
    /// check, and the next `Ping`, which carries `hlc` (the node's hybrid
    /// logical clock, already advanced for this event).
    ///
    /// Calling it early does nothing harmful.
    ///
    /// # Errors
    ///
    /// Fatal ones: [`ConnError::HandshakeTimeout`], [`ConnError::Silent`],
    /// [`ConnError::QueueFull`] (no room for the `Ping`), and
    /// [`ConnError::Closed`].
    pub fn handle_timeout(&mut self, now_ms: u64, hlc: u64) -> Result<(), ConnError> {
        self.check_open()?;
        self.hlc = self.hlc.max(hlc);
        let result = match self.state {
            State::Handshaking(_) if now_ms >= self.handshake_deadline_ms => {
                Err(ConnError::HandshakeTimeout)
            }
            State::Up { .. } if now_ms >= self.silent_at_ms() => Err(ConnError::Silent),
            State::Up { .. } if now_ms >= self.next_ping_ms => {
                let seq = self.ping_seq;
                self.ping_seq = self.ping_seq.wrapping_add(1);
                self.ping_in_flight = Some((seq, now_ms));
                // From now, not from the missed due time: after a stall of
                // the driver, one Ping is sent, not a burst.
                self.next_ping_ms = now_ms.saturating_add(self.heartbeat_ms);
                self.queue(&Frame::Ping { hlc: self.hlc, seq })
            }
            _ => Ok(()),
        };
        self.fail_on_error(result)
    }

    fn check_open(&self) -> Result<(), ConnError> {
        match self.state {
            State::Closed => Err(ConnError::Closed),
            _ => Ok(()),
        }
    }

    /// On a fatal error, closes: drops the state, buffers and events, so a
    /// failed connection holds no memory while the driver tears it down.
    fn fail_on_error(&mut self, result: Result<(), ConnError>) -> Result<(), ConnError> {
        if let Err(e) = &result {
            if e.is_fatal() {
                self.state = State::Closed;
                self.rx = Vec::new();
                self.tx = Vec::new();
                self.events = VecDeque::new();
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::frame::{Claim, Handle};
    use crate::core::Reason;
    use crate::proto::ids::{parse_node_name, parse_pair, Side};

    const COOKIE: &[u8] = b"0123456789abcdef";
    const HEARTBEAT_MS: u64 = 1_000;

    fn name(s: &str) -> NodeName {
        parse_node_name(s).unwrap()
    }

    fn known(n: &NodeName) -> bool {
        n == "n1" || n == "n2"
    }

    fn dialer(now: u64, cookie: &[u8]) -> PeerConn {
        PeerConn::new(
            now,
            Role::Dialer,
            name("n1"),
            cookie.to_vec(),
            [1; NONCE_BYTES],
            Some(name("n2")),
            HEARTBEAT_MS,
        )
    }

    fn acceptor(now: u64, cookie: &[u8]) -> PeerConn {
        PeerConn::new(
            now,
            Role::Acceptor,
            name("n2"),
            cookie.to_vec(),
            [2; NONCE_BYTES],
            None,
            HEARTBEAT_MS,
        )
    }

    /// Two connections wired back to back in memory, as in quinn's tests.
    struct Wire {
        d: PeerConn,
        a: PeerConn,
        d_events: Vec<ConnEvent>,
        a_events: Vec<ConnEvent>,
    }

    impl Wire {
        fn new(cookie_d: &[u8], cookie_a: &[u8]) -> Wire {
            Wire {
                d: dialer(0, cookie_d),
                a: acceptor(0, cookie_a),
                d_events: Vec::new(),
                a_events: Vec::new(),
            }
        }

        /// Moves bytes both ways until neither side has any to send, in at
        /// most a fixed number of rounds; `chunk` bytes per delivery.
        fn pump(&mut self, now: u64, chunk: usize) -> Result<(), ConnError> {
            for _ in 0..16 {
                let to_a = self.d.take_transmit();
                let to_d = self.a.take_transmit();
                if to_a.is_empty() && to_d.is_empty() {
                    return Ok(());
                }
                for piece in to_a.chunks(chunk) {
                    self.a.handle_bytes(now, piece, &known)?;
                }
                for piece in to_d.chunks(chunk) {
                    self.d.handle_bytes(now, piece, &known)?;
                }
                self.d_events
                    .extend(std::iter::from_fn(|| self.d.poll_event()));
                self.a_events
                    .extend(std::iter::from_fn(|| self.a.poll_event()));
            }
            panic!("the connections did not settle in 16 rounds");
        }

        fn up(chunk: usize) -> Wire {
            let mut w = Wire::new(COOKIE, COOKIE);
            w.pump(0, chunk).unwrap();
            assert_eq!(w.d_events, [ConnEvent::Up { peer: name("n2") }]);
            assert_eq!(w.a_events, [ConnEvent::Up { peer: name("n1") }]);
            w.d_events.clear();
            w.a_events.clear();
            w
        }

        /// Runs both sides' due timeouts at `now`, then pumps.
        fn tick(&mut self, now: u64, hlc_d: u64, hlc_a: u64) -> Result<(), ConnError> {
            if self.d.poll_timeout().is_some_and(|t| t <= now) {
                self.d.handle_timeout(now, hlc_d)?;
            }
            if self.a.poll_timeout().is_some_and(|t| t <= now) {
                self.a.handle_timeout(now, hlc_a)?;
            }
            self.pump(now, usize::MAX)
        }
    }

    fn lookup() -> Frame {
        Frame::Lookup {
            req: 1,
            pair: parse_pair("p").unwrap(),
            side: Side::A,
            claim: Claim {
                handle: Handle { key: 1, gen: 1 },
                hlc: 5,
            },
        }
    }

    fn deliver(data_bytes: usize) -> Frame {
        Frame::Deliver {
            req: 2,
            from: Handle { key: 1, gen: 1 },
            to: Handle { key: 2, gen: 2 },
            data: "x".repeat(data_bytes).into(),
            idempotency_key: None,
        }
    }

    #[test]
    fn back_to_back_connections_come_up_and_exchange_frames() {
        let mut w = Wire::up(usize::MAX);
        assert_eq!(w.d.peer(), Some(&name("n2")));
        assert_eq!(w.a.peer(), Some(&name("n1")));
        w.d.send(&lookup()).unwrap();
        let reply = Frame::LookupReply {
            req: 1,
            a: None,
            b: None,
        };
        w.a.send(&reply).unwrap();
        w.pump(10, usize::MAX).unwrap();
        assert_eq!(w.a_events, [ConnEvent::Frame(lookup())]);
        assert_eq!(w.d_events, [ConnEvent::Frame(reply)]);
    }

    #[test]
    fn byte_at_a_time_delivery_works() {
        let mut w = Wire::up(1);
        let exit = Frame::Exit {
            from: Handle { key: 3, gen: 4 },
            to: Handle { key: 5, gen: 6 },
            reason: Reason::NodeDown,
        };
        w.d.send(&exit).unwrap();
        w.d.send(&deliver(300)).unwrap();
        w.pump(10, 1).unwrap();
        assert_eq!(
            w.a_events,
            [ConnEvent::Frame(exit), ConnEvent::Frame(deliver(300))]
        );
    }

    #[test]
    fn node_frames_right_after_the_proof_use_the_full_limit() {
        // The dialer is up as soon as it has the acceptor's Proof; its
        // first node frame then leaves in the same write as its own Proof,
        // and is larger than the handshake limit.
        let mut d = dialer(0, COOKIE);
        let mut a = acceptor(0, COOKIE);
        let hello_d = d.take_transmit();
        a.handle_bytes(0, &hello_d, &known).unwrap();
        let hello_and_proof_a = a.take_transmit();
        d.handle_bytes(0, &hello_and_proof_a, &known).unwrap();
        assert_eq!(d.poll_event(), Some(ConnEvent::Up { peer: name("n2") }));
        d.send(&deliver(1_000)).unwrap();
        let proof_and_deliver = d.take_transmit();
        assert!(proof_and_deliver.len() > HANDSHAKE_FRAME_BYTES_MAX);
        a.handle_bytes(0, &proof_and_deliver, &known).unwrap();
        assert_eq!(a.poll_event(), Some(ConnEvent::Up { peer: name("n1") }));
        assert_eq!(a.poll_event(), Some(ConnEvent::Frame(deliver(1_000))));
        assert_eq!(a.poll_event(), None);
    }

    #[test]
    fn ping_is_answered_and_reports_the_peer_clock() {
        let mut w = Wire::up(usize::MAX);
        // Both Pings are due at once after Up.
        assert_eq!(w.d.poll_timeout(), Some(0));
        w.d.handle_timeout(0, 111).unwrap();
        w.a.handle_timeout(0, 222).unwrap();
        let ping_d = w.d.take_transmit();
        let ping_a = w.a.take_transmit();
        // Each arrives 7 ms later; the Pongs come back at once.
        w.a.handle_bytes(7, &ping_d, &known).unwrap();
        w.d.handle_bytes(7, &ping_a, &known).unwrap();
        assert_eq!(w.a.poll_event(), Some(ConnEvent::PeerClock(111)));
        assert_eq!(w.d.poll_event(), Some(ConnEvent::PeerClock(222)));
        let pong_a = w.a.take_transmit();
        let pong_d = w.d.take_transmit();
        assert_eq!(
            decode(&pong_a, FRAME_BYTES_MAX).unwrap().unwrap().0,
            Frame::Pong { hlc: 222, seq: 0 }
        );
        w.d.handle_bytes(7, &pong_a, &known).unwrap();
        w.a.handle_bytes(7, &pong_d, &known).unwrap();
        assert_eq!(w.d.poll_event(), Some(ConnEvent::PeerClock(222)));
        assert_eq!(w.a.poll_event(), Some(ConnEvent::PeerClock(111)));
        assert_eq!(w.d.rtt_ms(), Some(7));
        assert_eq!(w.a.rtt_ms(), Some(7));
        // The next Ping is one heartbeat after the last.
        assert_eq!(w.d.poll_timeout(), Some(HEARTBEAT_MS));
    }

    #[test]
    fn heartbeats_keep_both_alive() {
        let mut w = Wire::up(usize::MAX);
        let mut now = 0;
        for beat in 0..100u64 {
            w.tick(now, 1_000 + beat, 5_000 + beat).unwrap();
            now += HEARTBEAT_MS / 4;
        }
        assert!(w.d.is_up() && w.a.is_up());
        let clocks = |events: &[ConnEvent]| {
            events
                .iter()
                .filter(|e| matches!(e, ConnEvent::PeerClock(_)))
                .count()
        };
        // 25 heartbeats each way: a Ping and a Pong per heartbeat.
        assert!(clocks(&w.d_events) >= 2 * 24, "{}", clocks(&w.d_events));
        assert!(clocks(&w.a_events) >= 2 * 24);
        // The last Ping left at beat 96 (24 s), with the clock of that beat.
        assert!(w.d_events.contains(&ConnEvent::PeerClock(5_096)));
        assert_eq!(w.d.rtt_ms(), Some(0));
    }

    #[test]
    fn a_silent_peer_is_down_after_three_heartbeats() {
        let mut w = Wire::up(usize::MAX);
        // From time 0 nothing more reaches the dialer.
        let silent_at = SILENT_HEARTBEATS * HEARTBEAT_MS;
        let mut now = 0;
        while now < silent_at {
            assert_eq!(w.d.handle_timeout(now, 0), Ok(()), "at {now}");
            w.d.take_transmit();
            now = w.d.poll_timeout().unwrap();
        }
        assert_eq!(now, silent_at);
        assert_eq!(w.d.handle_timeout(silent_at - 1, 0), Ok(()));
        assert_eq!(w.d.handle_timeout(silent_at, 0), Err(ConnError::Silent));
        assert!(w.d.is_closed());
        assert_eq!(w.d.poll_timeout(), None);
        assert_eq!(w.d.send(&lookup()), Err(ConnError::Closed));
        assert_eq!(w.d.handle_timeout(silent_at + 1, 0), Err(ConnError::Closed));
    }

    #[test]
    fn any_received_byte_counts_as_life() {
        let mut w = Wire::up(usize::MAX);
        // A large frame arrives slowly: one byte per heartbeat.
        w.a.send(&deliver(10)).unwrap();
        let bytes = w.a.take_transmit();
        for (i, byte) in bytes.iter().enumerate() {
            let now = (i as u64 + 1) * HEARTBEAT_MS;
            w.d.handle_timeout(now, 0).unwrap();
            w.d.handle_bytes(now, std::slice::from_ref(byte), &known)
                .unwrap();
        }
        w.d.take_transmit();
        assert!(w.d.is_up());
        assert_eq!(w.d.poll_event(), Some(ConnEvent::Frame(deliver(10))));
    }

    #[test]
    fn handshake_has_a_deadline() {
        // 3 heartbeats of 1 s.
        let mut c = acceptor(500, COOKIE);
        assert_eq!(c.poll_timeout(), Some(3_500));
        assert_eq!(c.handle_timeout(3_499, 0), Ok(()));
        assert_eq!(c.handle_timeout(3_500, 0), Err(ConnError::HandshakeTimeout));
        assert!(c.is_closed());
        // At least 1 s, however short the heartbeat.
        let c = PeerConn::new(
            0,
            Role::Acceptor,
            name("n2"),
            COOKIE.to_vec(),
            [2; NONCE_BYTES],
            None,
            50,
        );
        assert_eq!(c.poll_timeout(), Some(HANDSHAKE_TIMEOUT_MS_MIN));
        // A heartbeat of 0 runs as 1 ms, not as a busy loop.
        let c = PeerConn::new(
            0,
            Role::Acceptor,
            name("n2"),
            COOKIE.to_vec(),
            [2; NONCE_BYTES],
            None,
            0,
        );
        assert_eq!(c.heartbeat_ms, HEARTBEAT_MS_MIN);
    }

    #[test]
    fn handshake_failures_close_both_sides() {
        let mut w = Wire::new(COOKIE, b"another cookie!!");
        let hello_d = w.d.take_transmit();
        let hello_a = w.a.take_transmit();
        w.a.handle_bytes(0, &hello_d, &known).unwrap();
        w.d.handle_bytes(0, &hello_a, &known).unwrap();
        let proof_a = w.a.take_transmit();
        let proof_d = w.d.take_transmit();
        let bad = ConnError::Handshake(HandshakeError::BadProof);
        assert_eq!(w.a.handle_bytes(0, &proof_d, &known), Err(bad.clone()));
        assert_eq!(w.d.handle_bytes(0, &proof_a, &known), Err(bad));
        assert!(w.a.is_closed() && w.d.is_closed());
        assert_eq!(w.a.poll_event(), None);
        // An unknown peer name.
        let mut a = acceptor(0, COOKIE);
        let mut d = dialer(0, COOKIE);
        let got = a.handle_bytes(0, &d.take_transmit(), &|_| false);
        assert_eq!(
            got,
            Err(ConnError::Handshake(HandshakeError::UnknownNode(name(
                "n1"
            ))))
        );
    }

    #[test]
    fn node_frames_wait_for_the_handshake() {
        let mut d = dialer(0, COOKIE);
        assert_eq!(d.send(&lookup()), Err(ConnError::NotUp));
        assert!(!d.is_closed());
        // A peer sending node frames before its Proof is refused.
        let mut a = acceptor(0, COOKIE);
        let mut bytes = d.take_transmit();
        encode(&Frame::Cancel { req: 1 }, &mut bytes);
        assert_eq!(
            a.handle_bytes(0, &bytes, &known),
            Err(ConnError::Handshake(HandshakeError::Unexpected("Cancel")))
        );
    }

    #[test]
    fn handshake_frames_after_up_are_refused() {
        let mut w = Wire::up(usize::MAX);
        let mut bytes = Vec::new();
        encode(
            &Frame::Proof {
                mac: [0; crate::cluster::frame::MAC_BYTES],
            },
            &mut bytes,
        );
        assert_eq!(
            w.a.handle_bytes(1, &bytes, &known),
            Err(ConnError::Unexpected("Proof"))
        );
    }

    #[test]
    fn a_peer_that_stops_reading_fills_the_queue() {
        let mut w = Wire::up(usize::MAX);
        let frame = deliver(1 << 20);
        let mut sent = 0;
        let err = loop {
            match w.d.send(&frame) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent <= 64, "the queue did not fill");
        };
        assert_eq!(err, ConnError::QueueFull);
        assert!(err.is_fatal());
        // 32 frames of 1 MiB and a few bytes reach 32 MiB.
        assert_eq!(sent, 32);
        assert!(w.d.is_closed());
        assert_eq!(w.d.transmit_bytes(), 0);
        assert_eq!(w.d.send(&lookup()), Err(ConnError::Closed));
    }

    #[test]
    fn taking_the_bytes_makes_room() {
        let mut w = Wire::up(usize::MAX);
        let frame = deliver(1 << 20);
        for _ in 0..100 {
            w.d.send(&frame).unwrap();
            w.d.take_transmit();
        }
        assert!(w.d.is_up());
    }

    #[test]
    fn a_frame_over_the_limit_is_not_sent() {
        let mut w = Wire::up(usize::MAX);
        let got = w.d.send(&deliver(FRAME_BYTES_MAX));
        assert!(matches!(got, Err(ConnError::FrameTooLarge(n)) if n > FRAME_BYTES_MAX));
        assert!(!got.unwrap_err().is_fatal());
        assert_eq!(w.d.transmit_bytes(), 0);
        // The connection goes on.
        w.d.send(&lookup()).unwrap();
        w.pump(1, usize::MAX).unwrap();
        assert_eq!(w.a_events, [ConnEvent::Frame(lookup())]);
    }

    #[test]
    fn oversized_frames_from_the_peer_are_refused() {
        // Before the handshake, the small limit applies.
        let mut a = acceptor(0, COOKIE);
        let prefix = (HANDSHAKE_FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        assert_eq!(
            a.handle_bytes(0, &prefix, &known),
            Err(ConnError::Decode(DecodeError::TooLarge(
                HANDSHAKE_FRAME_BYTES_MAX + 1
            )))
        );
        // After it, the full one; refused on the prefix alone.
        let mut w = Wire::up(usize::MAX);
        let prefix = (FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        assert_eq!(
            w.a.handle_bytes(1, &prefix, &known),
            Err(ConnError::Decode(DecodeError::TooLarge(
                FRAME_BYTES_MAX + 1
            )))
        );
        assert!(w.a.is_closed());
    }

    #[test]
    fn garbage_is_refused() {
        let cases: [(&[u8], ConnError); 3] = [
            (
                b"GET / HTTP/1.1\r\n",
                ConnError::Decode(DecodeError::TooLarge(0x4745_5420)),
            ),
            (
                &[0, 0, 0, 3, 99, 1, 2],
                ConnError::Decode(DecodeError::UnknownType(99)),
            ),
            (
                &[0, 0, 0, 0],
                ConnError::Decode(DecodeError::Malformed("empty frame")),
            ),
        ];
        for (bytes, want) in cases {
            let mut a = acceptor(0, COOKIE);
            assert_eq!(a.handle_bytes(0, bytes, &known), Err(want));
            assert!(a.is_closed());
        }
    }

    #[test]
    fn errors_read_well_in_a_log_line() {
        assert_eq!(
            ConnError::Handshake(HandshakeError::BadProof).to_string(),
            "handshake failed: peer's proof does not verify (another cookie, or a replayed handshake)"
        );
        assert_eq!(
            ConnError::Silent.to_string(),
            "peer silent for 3 heartbeats, considered down"
        );
    }
}
