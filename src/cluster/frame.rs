//! The node-to-node frames (docs/PROTOCOL.md), as values. Encoding and
//! decoding are in this file too; both are pure.

use crate::core::Reason;
use crate::proto::ids::{NodeName, PairId, Side};

/// Version spoken in `Hello`.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame accepted before the handshake completes (length prefix
/// excluded). A `Hello` is well under it.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 256;
/// Largest frame accepted from an authenticated peer. A frame carries at
/// most one message (<= 16 MiB by `--max-message-bytes`' cap) or one poll
/// answer; a longer length prefix closes the connection before anything is
/// allocated.
pub const FRAME_BYTES_MAX: usize = 32 << 20;
/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of an HMAC-SHA256 proof.
pub const MAC_BYTES: usize = 32;

/// A handler on one node: its slab key and generation. Which node is
/// implied by the connection and the field (`from` lives on the sender,
/// `to` on the receiver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    /// Slab key.
    pub key: u32,
    /// Generation.
    pub gen: u64,
}

/// A session's claim to its `(pair, side)`: its handle and the hybrid
/// logical clock reading at its join. Of two claims to one side, the one
/// with the smaller `(hlc, node name, key)` wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The claiming handler.
    pub handle: Handle,
    /// Hybrid logical clock at its join (milliseconds).
    pub hlc: u64,
}

/// Outcome of delivering a message to a peer's handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverResult {
    /// In the peer's buffer.
    Delivered,
    /// The target handler is gone (or not linked to the sender).
    PeerOffline,
    /// The target's buffer, or its node's, is full.
    PeerBusy,
}

/// A client request carried out on the session's home node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardOp {
    /// `GET …/events`
    Poll {
        /// Acknowledged seq.
        after: u64,
        /// Wait, or the home node's default.
        timeout_ms: Option<u64>,
    },
    /// `POST …/messages`
    Send {
        /// `Idempotency-Key`, already validated (1..=64 visible ASCII).
        idempotency_key: Option<Vec<u8>>,
        /// The message, valid UTF-8.
        data: Box<str>,
    },
    /// `DELETE`
    Leave,
    /// A join that carries the token of a session on the receiver: resume
    /// it (200 and the join body) or refuse (then the sender joins itself).
    Resume,
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame each way: who I am, and my fresh nonce.
    Hello {
        /// Must be [`PROTOCOL_VERSION`].
        version: u8,
        /// The sender's node name.
        name: NodeName,
        /// Fresh random bytes.
        nonce: [u8; NONCE_BYTES],
    },
    /// Second frame each way: HMAC proving the sender knows the cookie.
    Proof {
        /// HMAC-SHA256 (docs/PROTOCOL.md).
        mac: [u8; MAC_BYTES],
    },
    /// Heartbeat; answered by `Pong` with the same `seq`.
    Ping {
        /// Sender's hybrid logical clock.
        hlc: u64,
        /// Echoed in the `Pong`.
        seq: u64,
    },
    /// Heartbeat answer.
    Pong {
        /// Sender's hybrid logical clock.
        hlc: u64,
        /// The `Ping`'s seq.
        seq: u64,
    },
    /// Who holds `(pair, a)` and `(pair, b)` on your node? Carries the
    /// asker's own claim to `side`, so the receiver can settle a conflict.
    Lookup {
        /// Matches the reply.
        req: u64,
        /// The pair.
        pair: PairId,
        /// The side the asker's session holds.
        side: Side,
        /// The asker's session's claim.
        claim: Claim,
    },
    /// The holders of the pair's sides on the replying node.
    LookupReply {
        /// The lookup's req.
        req: u64,
        /// Holder of side a, if any.
        a: Option<Claim>,
        /// Holder of side b, if any.
        b: Option<Claim>,
    },
    /// `from` (on the sender) links to `to` (on the receiver).
    Link {
        /// The sender's handler and its claim.
        from: Claim,
        /// The receiver's handler.
        to: Handle,
    },
    /// `from` (on the sender) ended, or is not there; `to` was linked to it.
    Exit {
        /// The sender's handler.
        from: Handle,
        /// The receiver's handler.
        to: Handle,
        /// Why.
        reason: Reason,
    },
    /// Put a message from `from` into `to`'s buffer.
    Deliver {
        /// Matches the reply.
        req: u64,
        /// The sending handler (on the sender).
        from: Handle,
        /// The target handler (on the receiver).
        to: Handle,
        /// The message.
        data: Box<str>,
    },
    /// Outcome of a `Deliver`.
    DeliverReply {
        /// The deliver's req.
        req: u64,
        /// Outcome.
        result: DeliverResult,
    },
    /// Carry out a client request on the session's home node (the receiver).
    Forward {
        /// Matches the reply.
        req: u64,
        /// The session's pair.
        pair: PairId,
        /// The session's side.
        side: Side,
        /// Token's slab key.
        key: u32,
        /// Token's generation.
        gen: u64,
        /// Token's secret.
        secret: [u8; 16],
        /// What to do.
        op: ForwardOp,
    },
    /// The HTTP answer to a `Forward`: status and JSON body.
    ForwardReply {
        /// The forward's req.
        req: u64,
        /// HTTP status.
        status: u16,
        /// JSON body (empty for 204).
        body: Vec<u8>,
    },
    /// The client of a forwarded request went away.
    Cancel {
        /// The forward's req.
        req: u64,
    },
}
