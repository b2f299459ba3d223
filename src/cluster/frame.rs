//! The node-to-node frames (docs/PROTOCOL.md), as values. Encoding and
//! decoding are in this file too; both are pure.

use crate::core::Reason;
use crate::limits::IDEMPOTENCY_KEY_BYTES_MAX;
use crate::proto::ids::{parse_node_name, parse_pair, NodeName, PairId, Side};
use std::fmt;

/// Version spoken in `Hello`.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame accepted before the handshake completes (length prefix
/// excluded). A `Hello` is well under it.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 256;
/// Largest frame accepted from an authenticated peer. A frame carries at
/// most one message (<= 4 MiB by `--max-message-bytes`' cap) or one poll
/// answer; a longer length prefix closes the connection before anything is
/// allocated.
pub const FRAME_BYTES_MAX: usize = 32 << 20;
/// Largest body a `ForwardReply` can carry within [`FRAME_BYTES_MAX`]: the
/// frame also holds its type (1 byte), `req` (8), `status` (2) and the
/// body's length (4).
pub const FORWARD_REPLY_BODY_BYTES_MAX: usize = FRAME_BYTES_MAX - 1 - 8 - 2 - 4;
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
        /// The sender's `Idempotency-Key`, if any: the receiver remembers
        /// it per sending handler, so a retry after an unknown outcome is
        /// not delivered twice.
        idempotency_key: Option<Vec<u8>>,
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

// ---------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------

/// Bytes of the length prefix in front of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Frame type numbers: the byte after the length prefix (docs/PROTOCOL.md).
pub mod kind {
    /// [`super::Frame::Hello`]. Its layout is the same in every protocol
    /// version, so a version mismatch is always recognised as one.
    pub const HELLO: u8 = 1;
    /// [`super::Frame::Proof`].
    pub const PROOF: u8 = 2;
    /// [`super::Frame::Ping`].
    pub const PING: u8 = 3;
    /// [`super::Frame::Pong`].
    pub const PONG: u8 = 4;
    /// [`super::Frame::Lookup`].
    pub const LOOKUP: u8 = 10;
    /// [`super::Frame::LookupReply`].
    pub const LOOKUP_REPLY: u8 = 11;
    /// [`super::Frame::Link`].
    pub const LINK: u8 = 12;
    /// [`super::Frame::Exit`].
    pub const EXIT: u8 = 13;
    /// [`super::Frame::Deliver`].
    pub const DELIVER: u8 = 14;
    /// [`super::Frame::DeliverReply`].
    pub const DELIVER_REPLY: u8 = 15;
    /// [`super::Frame::Forward`].
    pub const FORWARD: u8 = 16;
    /// [`super::Frame::ForwardReply`].
    pub const FORWARD_REPLY: u8 = 17;
    /// [`super::Frame::Cancel`].
    pub const CANCEL: u8 = 18;

    /// Whether `t` is a frame type this version knows. Checked as soon as
    /// the type byte arrives, before waiting for (or buffering) the body.
    pub fn is_known(t: u8) -> bool {
        matches!(t, HELLO | PROOF | PING | PONG | LOOKUP..=CANCEL)
    }
}

// Tags of the enums inside frames. Part of the wire format.
const SIDE_A: u8 = 0;
const SIDE_B: u8 = 1;
const REASON_LEFT: u8 = 0;
const REASON_EXPIRED: u8 = 1;
const REASON_NODE_DOWN: u8 = 2;
const REASON_SHUTDOWN: u8 = 3;
const RESULT_DELIVERED: u8 = 0;
const RESULT_PEER_OFFLINE: u8 = 1;
const RESULT_PEER_BUSY: u8 = 2;
const OP_POLL: u8 = 0;
const OP_SEND: u8 = 1;
const OP_LEAVE: u8 = 2;
const OP_RESUME: u8 = 3;
const OPTION_NONE: u8 = 0;
const OPTION_SOME: u8 = 1;

/// Lowest and highest HTTP status a `ForwardReply` may carry: the receiver
/// writes it into a status line as it is.
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;

const _: () = assert!(HANDSHAKE_FRAME_BYTES_MAX < FRAME_BYTES_MAX);
// The length prefix is a u32.
const _: () = assert!(FRAME_BYTES_MAX as u64 <= u32::MAX as u64);
// An idempotency key's length is one byte, and 0 means "none".
const _: () = assert!(IDEMPOTENCY_KEY_BYTES_MAX > 0 && IDEMPOTENCY_KEY_BYTES_MAX <= 255);

impl Frame {
    /// The frame's type number (see [`kind`]).
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Proof { .. } => kind::PROOF,
            Frame::Ping { .. } => kind::PING,
            Frame::Pong { .. } => kind::PONG,
            Frame::Lookup { .. } => kind::LOOKUP,
            Frame::LookupReply { .. } => kind::LOOKUP_REPLY,
            Frame::Link { .. } => kind::LINK,
            Frame::Exit { .. } => kind::EXIT,
            Frame::Deliver { .. } => kind::DELIVER,
            Frame::DeliverReply { .. } => kind::DELIVER_REPLY,
            Frame::Forward { .. } => kind::FORWARD,
            Frame::ForwardReply { .. } => kind::FORWARD_REPLY,
            Frame::Cancel { .. } => kind::CANCEL,
        }
    }

    /// The variant's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Proof { .. } => "Proof",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::Lookup { .. } => "Lookup",
            Frame::LookupReply { .. } => "LookupReply",
            Frame::Link { .. } => "Link",
            Frame::Exit { .. } => "Exit",
            Frame::Deliver { .. } => "Deliver",
            Frame::DeliverReply { .. } => "DeliverReply",
            Frame::Forward { .. } => "Forward",
            Frame::ForwardReply { .. } => "ForwardReply",
            Frame::Cancel { .. } => "Cancel",
        }
    }
}

/// Why bytes from a peer are not a frame. Each one ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix announces this many bytes, over the limit in force.
    TooLarge(usize),
    /// A frame type this version does not know.
    UnknownType(u8),
    /// The frame's fields do not parse; says which rule broke.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge(n) => {
                write!(f, "frame of {n} bytes is over the limit")?;
                // The length prefix read as text: a peer address that is
                // an HTTP port (or a client that took this for one) shows
                // as a few letters of HTTP.
                let prefix = u32::try_from(*n).unwrap_or(u32::MAX).to_be_bytes();
                if [
                    &b"HTTP"[..],
                    b"GET ",
                    b"POST",
                    b"HEAD",
                    b"PUT ",
                    b"DELE",
                    b"OPTI",
                ]
                .contains(&&prefix[..])
                {
                    write!(
                        f,
                        " (its first bytes are {:?}: HTTP, not the pairlink node protocol; \
                         is this an HTTP port?)",
                        String::from_utf8_lossy(&prefix)
                    )?;
                }
                Ok(())
            }
            DecodeError::UnknownType(t) => write!(f, "unknown frame type {t}"),
            DecodeError::Malformed(what) => write!(f, "malformed frame: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends `frame`, length prefix first, to `out`.
///
/// Never panics. The values are assumed to be within their documented
/// syntax (ids parsed, idempotency keys 1..=64 visible ASCII); a frame that
/// is not, or whose encoding exceeds [`FRAME_BYTES_MAX`], is still written,
/// and the peer refuses it and closes the connection.
/// [`crate::cluster::conn::PeerConn::send`] refuses oversized frames first.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX_BYTES]);
    out.push(frame.kind());
    match frame {
        Frame::Hello {
            version,
            name,
            nonce,
        } => {
            out.push(*version);
            put_short(out, name.as_bytes());
            out.extend_from_slice(nonce);
        }
        Frame::Proof { mac } => out.extend_from_slice(mac),
        Frame::Ping { hlc, seq } | Frame::Pong { hlc, seq } => {
            put_u64(out, *hlc);
            put_u64(out, *seq);
        }
        Frame::Lookup {
            req,
            pair,
            side,
            claim,
        } => {
            put_u64(out, *req);
            put_short(out, pair.as_bytes());
            put_side(out, *side);
            put_claim(out, claim);
        }
        Frame::LookupReply { req, a, b } => {
            put_u64(out, *req);
            put_opt_claim(out, a.as_ref());
            put_opt_claim(out, b.as_ref());
        }
        Frame::Link { from, to } => {
            put_claim(out, from);
            put_handle(out, to);
        }
        Frame::Exit { from, to, reason } => {
            put_handle(out, from);
            put_handle(out, to);
            out.push(match reason {
                Reason::Left => REASON_LEFT,
                Reason::Expired => REASON_EXPIRED,
                Reason::NodeDown => REASON_NODE_DOWN,
                Reason::Shutdown => REASON_SHUTDOWN,
            });
        }
        Frame::Deliver {
            req,
            from,
            to,
            data,
            idempotency_key,
        } => {
            put_u64(out, *req);
            put_handle(out, from);
            put_handle(out, to);
            put_short(out, idempotency_key.as_deref().unwrap_or_default());
            put_long(out, data.as_bytes());
        }
        Frame::DeliverReply { req, result } => {
            put_u64(out, *req);
            out.push(match result {
                DeliverResult::Delivered => RESULT_DELIVERED,
                DeliverResult::PeerOffline => RESULT_PEER_OFFLINE,
                DeliverResult::PeerBusy => RESULT_PEER_BUSY,
            });
        }
        Frame::Forward {
            req,
            pair,
            side,
            key,
            gen,
            secret,
            op,
        } => {
            put_u64(out, *req);
            put_short(out, pair.as_bytes());
            put_side(out, *side);
            out.extend_from_slice(&key.to_be_bytes());
            put_u64(out, *gen);
            out.extend_from_slice(secret);
            match op {
                ForwardOp::Poll { after, timeout_ms } => {
                    out.push(OP_POLL);
                    put_u64(out, *after);
                    match timeout_ms {
                        None => out.push(OPTION_NONE),
                        Some(t) => {
                            out.push(OPTION_SOME);
                            put_u64(out, *t);
                        }
                    }
                }
                ForwardOp::Send {
                    idempotency_key,
                    data,
                } => {
                    out.push(OP_SEND);
                    // Keys are never empty, so length 0 can stand for "none".
                    put_short(out, idempotency_key.as_deref().unwrap_or_default());
                    put_long(out, data.as_bytes());
                }
                ForwardOp::Leave => out.push(OP_LEAVE),
                ForwardOp::Resume => out.push(OP_RESUME),
            }
        }
        Frame::ForwardReply { req, status, body } => {
            put_u64(out, *req);
            out.extend_from_slice(&status.to_be_bytes());
            put_long(out, body);
        }
        Frame::Cancel { req } => put_u64(out, *req),
    }
    // A length that does not fit saturates: u32::MAX is far over any
    // receiver's limit, so such a frame is refused instead of misread.
    let len = out.len() - start - FRAME_PREFIX_BYTES;
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A u8 length and the bytes. Ids fit by their types; anything longer
/// saturates the length, which the receiver's checks then refuse.
fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

/// A u32 length and the bytes.
fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_side(out: &mut Vec<u8>, side: Side) {
    out.push(match side {
        Side::A => SIDE_A,
        Side::B => SIDE_B,
    });
}

fn put_handle(out: &mut Vec<u8>, h: &Handle) {
    out.extend_from_slice(&h.key.to_be_bytes());
    put_u64(out, h.gen);
}

fn put_claim(out: &mut Vec<u8>, c: &Claim) {
    put_handle(out, &c.handle);
    put_u64(out, c.hlc);
}

fn put_opt_claim(out: &mut Vec<u8>, c: Option<&Claim>) {
    match c {
        None => out.push(OPTION_NONE),
        Some(c) => {
            out.push(OPTION_SOME);
            put_claim(out, c);
        }
    }
}

/// Decodes the first frame of `buf`.
///
/// - `Ok(Some((frame, consumed)))`: a frame, and how many bytes of `buf`
///   (prefix included) it took.
/// - `Ok(None)`: `buf` holds only the start of a frame; call again with
///   more bytes. The prefix has then been checked against
///   `frame_bytes_max`, and the type byte (when present) against the known
///   types, so the caller never buffers more than
///   `frame_bytes_max + FRAME_PREFIX_BYTES` bytes waiting for one frame.
/// - `Err(_)`: not a frame of this protocol; the connection must end.
///
/// A length prefix over `frame_bytes_max` is refused as soon as its 4 bytes
/// are there. Every field is checked (ids by [`parse_pair`] and
/// [`parse_node_name`], UTF-8, idempotency keys, enum tags, HTTP status),
/// and a frame must end exactly where its last field does. Never panics.
pub fn decode(buf: &[u8], frame_bytes_max: usize) -> Result<Option<(Frame, usize)>, DecodeError> {
    let Some((prefix, rest)) = buf.split_first_chunk::<FRAME_PREFIX_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    let len = usize::try_from(len).map_err(|_| DecodeError::TooLarge(usize::MAX))?;
    if len > frame_bytes_max {
        return Err(DecodeError::TooLarge(len));
    }
    if len == 0 {
        return Err(DecodeError::Malformed("empty frame"));
    }
    if let Some(&t) = rest.first() {
        if !kind::is_known(t) {
            return Err(DecodeError::UnknownType(t));
        }
    }
    let Some(body) = rest.get(..len) else {
        return Ok(None);
    };
    let frame = parse_body(body)?;
    Ok(Some((frame, FRAME_PREFIX_BYTES + len)))
}

/// Parses one complete frame body (type byte and fields).
fn parse_body(body: &[u8]) -> Result<Frame, DecodeError> {
    let mut r = Reader { buf: body };
    let t = r.u8()?;
    let frame = match t {
        kind::HELLO => Frame::Hello {
            version: r.u8()?,
            name: r.node_name()?,
            nonce: r.array()?,
        },
        kind::PROOF => Frame::Proof { mac: r.array()? },
        kind::PING => Frame::Ping {
            hlc: r.u64()?,
            seq: r.u64()?,
        },
        kind::PONG => Frame::Pong {
            hlc: r.u64()?,
            seq: r.u64()?,
        },
        kind::LOOKUP => Frame::Lookup {
            req: r.u64()?,
            pair: r.pair()?,
            side: r.side()?,
            claim: r.claim()?,
        },
        kind::LOOKUP_REPLY => Frame::LookupReply {
            req: r.u64()?,
            a: r.opt_claim()?,
            b: r.opt_claim()?,
        },
        kind::LINK => Frame::Link {
            from: r.claim()?,
            to: r.handle()?,
        },
        kind::EXIT => Frame::Exit {
            from: r.handle()?,
            to: r.handle()?,
            reason: r.reason()?,
        },
        kind::DELIVER => Frame::Deliver {
            req: r.u64()?,
            from: r.handle()?,
            to: r.handle()?,
            idempotency_key: r.idempotency_key()?,
            data: r.text()?,
        },
        kind::DELIVER_REPLY => Frame::DeliverReply {
            req: r.u64()?,
            result: r.deliver_result()?,
        },
        kind::FORWARD => Frame::Forward {
            req: r.u64()?,
            pair: r.pair()?,
            side: r.side()?,
            key: r.u32()?,
            gen: r.u64()?,
            secret: r.array()?,
            op: r.forward_op()?,
        },
        kind::FORWARD_REPLY => Frame::ForwardReply {
            req: r.u64()?,
            status: r.status()?,
            body: r.long()?.to_vec(),
        },
        kind::CANCEL => Frame::Cancel { req: r.u64()? },
        other => return Err(DecodeError::UnknownType(other)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Malformed(
            "trailing bytes after the last field",
        ));
    }
    Ok(frame)
}

/// Reads fields off the front of one complete frame body. Every read is
/// bounded by the body, so no length field can make it allocate or read
/// more than the frame holds.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed("frame ends inside a field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A u8 length and that many bytes.
    fn short(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A u32 length and that many bytes.
    fn long(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Malformed("length too large"))?;
        self.take(n)
    }

    fn pair(&mut self) -> Result<PairId, DecodeError> {
        std::str::from_utf8(self.short()?)
            .ok()
            .and_then(parse_pair)
            .ok_or(DecodeError::Malformed("bad pair id"))
    }

    fn node_name(&mut self) -> Result<NodeName, DecodeError> {
        std::str::from_utf8(self.short()?)
            .ok()
            .and_then(parse_node_name)
            .ok_or(DecodeError::Malformed("bad node name"))
    }

    fn text(&mut self) -> Result<Box<str>, DecodeError> {
        std::str::from_utf8(self.long()?)
            .map(Box::from)
            .map_err(|_| DecodeError::Malformed("data is not UTF-8"))
    }

    fn side(&mut self) -> Result<Side, DecodeError> {
        match self.u8()? {
            SIDE_A => Ok(Side::A),
            SIDE_B => Ok(Side::B),
            _ => Err(DecodeError::Malformed("bad side")),
        }
    }

    fn handle(&mut self) -> Result<Handle, DecodeError> {
        Ok(Handle {
            key: self.u32()?,
            gen: self.u64()?,
        })
    }

    fn claim(&mut self) -> Result<Claim, DecodeError> {
        Ok(Claim {
            handle: self.handle()?,
            hlc: self.u64()?,
        })
    }

    fn option_tag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            OPTION_NONE => Ok(false),
            OPTION_SOME => Ok(true),
            _ => Err(DecodeError::Malformed("bad option tag")),
        }
    }

    fn opt_claim(&mut self) -> Result<Option<Claim>, DecodeError> {
        Ok(if self.option_tag()? {
            Some(self.claim()?)
        } else {
            None
        })
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.option_tag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    fn reason(&mut self) -> Result<Reason, DecodeError> {
        match self.u8()? {
            REASON_LEFT => Ok(Reason::Left),
            REASON_EXPIRED => Ok(Reason::Expired),
            REASON_NODE_DOWN => Ok(Reason::NodeDown),
            REASON_SHUTDOWN => Ok(Reason::Shutdown),
            _ => Err(DecodeError::Malformed("bad reason")),
        }
    }

    fn deliver_result(&mut self) -> Result<DeliverResult, DecodeError> {
        match self.u8()? {
            RESULT_DELIVERED => Ok(DeliverResult::Delivered),
            RESULT_PEER_OFFLINE => Ok(DeliverResult::PeerOffline),
            RESULT_PEER_BUSY => Ok(DeliverResult::PeerBusy),
            _ => Err(DecodeError::Malformed("bad deliver result")),
        }
    }

    fn status(&mut self) -> Result<u16, DecodeError> {
        let s = self.u16()?;
        if (STATUS_MIN..=STATUS_MAX).contains(&s) {
            Ok(s)
        } else {
            Err(DecodeError::Malformed("HTTP status out of range"))
        }
    }

    /// A u8 length (0 = none) and a key of 1..=64 visible ASCII bytes.
    fn idempotency_key(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let key = self.short()?;
        if key.is_empty() {
            return Ok(None);
        }
        if key.len() > IDEMPOTENCY_KEY_BYTES_MAX || !key.iter().all(|b| (0x21..=0x7E).contains(b)) {
            return Err(DecodeError::Malformed("bad idempotency key"));
        }
        Ok(Some(key.to_vec()))
    }

    fn forward_op(&mut self) -> Result<ForwardOp, DecodeError> {
        match self.u8()? {
            OP_POLL => Ok(ForwardOp::Poll {
                after: self.u64()?,
                timeout_ms: self.opt_u64()?,
            }),
            OP_SEND => Ok(ForwardOp::Send {
                idempotency_key: self.idempotency_key()?,
                data: self.text()?,
            }),
            OP_LEAVE => Ok(ForwardOp::Leave),
            OP_RESUME => Ok(ForwardOp::Resume),
            _ => Err(DecodeError::Malformed("bad forward op")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        parse_node_name(s).unwrap()
    }

    fn pair(s: &str) -> PairId {
        parse_pair(s).unwrap()
    }

    fn claim(key: u32, gen: u64, hlc: u64) -> Claim {
        Claim {
            handle: Handle { key, gen },
            hlc,
        }
    }

    fn forward(op: ForwardOp) -> Frame {
        Frame::Forward {
            req: 9,
            pair: pair("p-1"),
            side: Side::B,
            key: 3,
            gen: 4,
            secret: [0x5A; 16],
            op,
        }
    }

    /// Every variant, and every branch of every enum and option inside one.
    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                name: name("n1"),
                nonce: [7; NONCE_BYTES],
            },
            Frame::Hello {
                version: 200,
                name: name(&"N".repeat(32)),
                nonce: [0; NONCE_BYTES],
            },
            Frame::Proof {
                mac: [0xEE; MAC_BYTES],
            },
            Frame::Ping {
                hlc: u64::MAX,
                seq: 0,
            },
            Frame::Pong { hlc: 1, seq: 2 },
            Frame::Lookup {
                req: 1,
                pair: pair(&"x".repeat(64)),
                side: Side::A,
                claim: claim(u32::MAX, u64::MAX, 5),
            },
            Frame::Lookup {
                req: 2,
                pair: pair("Az09_-"),
                side: Side::B,
                claim: claim(0, 0, 0),
            },
            Frame::LookupReply {
                req: 3,
                a: None,
                b: None,
            },
            Frame::LookupReply {
                req: 4,
                a: Some(claim(1, 2, 3)),
                b: Some(claim(4, 5, 6)),
            },
            Frame::LookupReply {
                req: 5,
                a: None,
                b: Some(claim(4, 5, 6)),
            },
            Frame::Link {
                from: claim(1, 2, 3),
                to: Handle { key: 4, gen: 5 },
            },
            Frame::Exit {
                from: Handle { key: 1, gen: 2 },
                to: Handle { key: 3, gen: 4 },
                reason: Reason::Left,
            },
            Frame::Exit {
                from: Handle { key: 1, gen: 2 },
                to: Handle { key: 3, gen: 4 },
                reason: Reason::Expired,
            },
            Frame::Exit {
                from: Handle { key: 1, gen: 2 },
                to: Handle { key: 3, gen: 4 },
                reason: Reason::NodeDown,
            },
            Frame::Exit {
                from: Handle { key: 1, gen: 2 },
                to: Handle { key: 3, gen: 4 },
                reason: Reason::Shutdown,
            },
            Frame::Deliver {
                req: 6,
                from: Handle { key: 1, gen: 2 },
                to: Handle { key: 3, gen: 4 },
                data: "héllo \"world\"\n".into(),
                idempotency_key: None,
            },
            Frame::Deliver {
                req: 7,
                from: Handle { key: 1, gen: 2 },
                to: Handle { key: 3, gen: 4 },
                data: "".into(),
                idempotency_key: None,
            },
            Frame::DeliverReply {
                req: 8,
                result: DeliverResult::Delivered,
            },
            Frame::DeliverReply {
                req: 8,
                result: DeliverResult::PeerOffline,
            },
            Frame::DeliverReply {
                req: 8,
                result: DeliverResult::PeerBusy,
            },
            forward(ForwardOp::Poll {
                after: 10,
                timeout_ms: None,
            }),
            forward(ForwardOp::Poll {
                after: 0,
                timeout_ms: Some(120_000),
            }),
            forward(ForwardOp::Send {
                idempotency_key: None,
                data: "m".into(),
            }),
            forward(ForwardOp::Send {
                idempotency_key: Some(b"!~".repeat(32)),
                data: "".into(),
            }),
            forward(ForwardOp::Leave),
            forward(ForwardOp::Resume),
            Frame::ForwardReply {
                req: 11,
                status: 200,
                body: br#"{"peer":"online","events":[]}"#.to_vec(),
            },
            Frame::ForwardReply {
                req: 12,
                status: 204,
                body: Vec::new(),
            },
            Frame::Cancel { req: u64::MAX },
        ]
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode(frame, &mut out);
        out
    }

    #[test]
    fn every_variant_round_trips() {
        let mut kinds = std::collections::BTreeSet::new();
        for frame in samples() {
            kinds.insert(frame.kind());
            let bytes = encoded(&frame);
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len + FRAME_PREFIX_BYTES, bytes.len(), "{frame:?}");
            assert_eq!(bytes[4], frame.kind());
            assert_eq!(
                decode(&bytes, FRAME_BYTES_MAX),
                Ok(Some((frame.clone(), bytes.len()))),
                "{frame:?}"
            );
        }
        assert_eq!(kinds.len(), 13, "a variant is missing from the table");
    }

    #[test]
    fn frames_back_to_back_decode_one_at_a_time() {
        let frames = samples();
        let mut stream = Vec::new();
        for f in &frames {
            encode(f, &mut stream);
        }
        let mut pos = 0;
        for f in &frames {
            let (got, n) = decode(&stream[pos..], FRAME_BYTES_MAX).unwrap().unwrap();
            assert_eq!(&got, f);
            pos += n;
        }
        assert_eq!(pos, stream.len());
        assert_eq!(decode(&stream[pos..], FRAME_BYTES_MAX), Ok(None));
    }

    #[test]
    fn every_truncated_prefix_needs_more() {
        for frame in samples() {
            let bytes = encoded(&frame);
            for end in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..end], FRAME_BYTES_MAX),
                    Ok(None),
                    "{frame:?} cut at {end}"
                );
            }
        }
    }

    #[test]
    fn handshake_frames_fit_the_handshake_limit() {
        for frame in samples()
            .into_iter()
            .filter(|f| matches!(f, Frame::Hello { .. } | Frame::Proof { .. }))
        {
            let bytes = encoded(&frame);
            assert!(decode(&bytes, HANDSHAKE_FRAME_BYTES_MAX).unwrap().is_some());
        }
    }

    #[test]
    fn oversized_prefix_is_refused_with_four_bytes() {
        let cases: [(u32, usize); 4] = [
            (257, HANDSHAKE_FRAME_BYTES_MAX),
            (FRAME_BYTES_MAX as u32 + 1, FRAME_BYTES_MAX),
            (u32::MAX, FRAME_BYTES_MAX),
            (u32::MAX, HANDSHAKE_FRAME_BYTES_MAX),
        ];
        for (len, max) in cases {
            assert_eq!(
                decode(&len.to_be_bytes(), max),
                Err(DecodeError::TooLarge(len as usize))
            );
        }
        // Exactly at the limit is fine: it waits for the body.
        assert_eq!(decode(&256u32.to_be_bytes(), 256), Ok(None));
    }

    #[test]
    fn zero_length_frame_is_malformed() {
        assert_eq!(
            decode(&[0, 0, 0, 0], FRAME_BYTES_MAX),
            Err(DecodeError::Malformed("empty frame"))
        );
    }

    #[test]
    fn unknown_type_is_refused_before_the_body() {
        for t in [0u8, 5, 9, 19, 255] {
            assert_eq!(
                decode(&[0, 0, 1, 0, t], FRAME_BYTES_MAX),
                Err(DecodeError::UnknownType(t))
            );
        }
    }

    /// Encodes `frame`, then sets the byte `at` bytes into the body (after
    /// the type byte) to `value`.
    fn corrupt(frame: &Frame, at: usize, value: u8) -> Vec<u8> {
        let mut bytes = encoded(frame);
        bytes[FRAME_PREFIX_BYTES + 1 + at] = value;
        bytes
    }

    fn malformed(bytes: &[u8]) -> &'static str {
        match decode(bytes, FRAME_BYTES_MAX) {
            Err(DecodeError::Malformed(what)) => what,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn corrupted_fields_are_malformed() {
        let hello = &samples()[0];
        let lookup = &samples()[5];
        let reply = &samples()[7];
        let exit = &samples()[11];
        let deliver = &samples()[15];
        let result = &samples()[17];
        let poll = &samples()[20];
        let send = &samples()[23];
        let forward_reply = &samples()[26];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // Hello: version(1) name_len(1) name..
            (corrupt(hello, 1, 0), "bad node name"),
            (corrupt(hello, 2, b'.'), "bad node name"),
            (corrupt(hello, 2, 0xFF), "bad node name"),
            (corrupt(hello, 1, 60), "frame ends inside a field"),
            // Lookup: req(8) pair_len(1) pair(64) side(1)
            (corrupt(lookup, 8, 0), "bad pair id"),
            (corrupt(lookup, 9, b' '), "bad pair id"),
            (corrupt(lookup, 8 + 1 + 64, 2), "bad side"),
            // LookupReply: req(8) tag(1)
            (corrupt(reply, 8, 2), "bad option tag"),
            (corrupt(reply, 8, 1), "frame ends inside a field"),
            // Exit: from(12) to(12) reason(1)
            (corrupt(exit, 24, 4), "bad reason"),
            // Deliver: req(8) from(12) to(12) key_len(1) len(4) data
            (corrupt(deliver, 37, 0xC3), "data is not UTF-8"),
            (corrupt(deliver, 33, 0x7F), "frame ends inside a field"),
            // DeliverReply: req(8) result(1)
            (corrupt(result, 8, 3), "bad deliver result"),
            // Forward: req(8) pair_len(1) "p-1"(3) side(1) key(4) gen(8)
            // secret(16) op(1) after(8) tag(1)
            (corrupt(poll, 12, 7), "bad side"),
            (corrupt(poll, 41, 4), "bad forward op"),
            (corrupt(poll, 50, 9), "bad option tag"),
            // Send: op(1) key_len(1) key(64)
            (corrupt(send, 42, 200), "frame ends inside a field"),
            (corrupt(send, 43, b' '), "bad idempotency key"),
            (corrupt(send, 43, 0x80), "bad idempotency key"),
            // ForwardReply: req(8) status(2)
            (corrupt(forward_reply, 8, 0xFF), "HTTP status out of range"),
            (corrupt(forward_reply, 9, 99), "HTTP status out of range"),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            assert_eq!(malformed(bytes), *want, "case {i}");
        }
    }

    #[test]
    fn idempotency_key_over_64_bytes_is_malformed() {
        let frame = forward(ForwardOp::Send {
            idempotency_key: Some(vec![b'k'; 65]),
            data: "".into(),
        });
        assert_eq!(malformed(&encoded(&frame)), "bad idempotency key");
        let status = Frame::ForwardReply {
            req: 1,
            status: 600,
            body: Vec::new(),
        };
        assert_eq!(malformed(&encoded(&status)), "HTTP status out of range");
    }

    #[test]
    fn lengths_must_match_the_fields() {
        for frame in samples() {
            let bytes = encoded(&frame);
            // One byte more in the frame than its fields take.
            let mut long = bytes.clone();
            long.push(0);
            let len = (bytes.len() - FRAME_PREFIX_BYTES + 1) as u32;
            long[..4].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                malformed(&long),
                "trailing bytes after the last field",
                "{frame:?}"
            );
            // One byte less: the last field is cut.
            let mut short = bytes[..bytes.len() - 1].to_vec();
            let len = (bytes.len() - FRAME_PREFIX_BYTES - 1) as u32;
            short[..4].copy_from_slice(&len.to_be_bytes());
            if len > 0 {
                let got = decode(&short, FRAME_BYTES_MAX);
                assert!(matches!(got, Err(DecodeError::Malformed(_))), "{frame:?}");
            }
        }
    }

    /// The size table of docs/PROTOCOL.md §4.12 (`length`, type included).
    #[test]
    fn lengths_match_the_documented_table() {
        let length = |f: &Frame| encoded(f).len() - FRAME_PREFIX_BYTES;
        let s = samples();
        assert_eq!(length(&s[0]), 35 + 2); // Hello, name "n1"
        assert_eq!(length(&s[1]), 67); // Hello, longest name
        assert_eq!(length(&s[2]), 33); // Proof
        assert_eq!(length(&s[3]), 17); // Ping
        assert_eq!(length(&s[5]), 95); // Lookup, longest pair
        assert_eq!(length(&s[7]), 11); // LookupReply, none, none
        assert_eq!(length(&s[9]), 31); // LookupReply, none, some
        assert_eq!(length(&s[8]), 51); // LookupReply, some, some
        assert_eq!(length(&s[10]), 33); // Link
        assert_eq!(length(&s[11]), 26); // Exit
        assert_eq!(length(&s[16]), 38); // Deliver, empty, no key
        assert_eq!(length(&s[17]), 10); // DeliverReply
        assert_eq!(length(&s[20]), 39 + 3 + 10); // Forward Poll, pair "p-1"
        assert_eq!(length(&s[21]), 39 + 3 + 18); // Forward Poll with timeout
        assert_eq!(length(&s[22]), 39 + 3 + 6 + 1); // Send, no key, "m"
        assert_eq!(length(&s[23]), 39 + 3 + 6 + 64); // Send, 64-byte key
        assert_eq!(length(&s[24]), 39 + 3 + 1); // Leave
        assert_eq!(length(&s[27]), 15); // ForwardReply, empty
        assert_eq!(length(&s[28]), 9); // Cancel
    }

    /// The byte layout stated in docs/PROTOCOL.md's example.
    #[test]
    fn ping_matches_the_documented_bytes() {
        let bytes = encoded(&Frame::Ping { hlc: 1, seq: 2 });
        let want = [
            0, 0, 0, 17, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2,
        ];
        assert_eq!(bytes, want);
    }

    /// Mutated encodings never panic the decoder, and whatever decodes
    /// encodes back to the same bytes: the encoding is canonical, so no two
    /// byte strings mean the same frame.
    #[test]
    fn mutations_never_panic_and_decoding_is_canonical() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for frame in samples() {
            let original = encoded(&frame);
            for _ in 0..2_000 {
                let mut bytes = original.clone();
                for _ in 0..(next() % 3 + 1) {
                    let i = (next() % bytes.len() as u64) as usize;
                    bytes[i] = next() as u8;
                }
                if next() % 4 == 0 {
                    bytes.truncate((next() % bytes.len() as u64) as usize);
                }
                if let Ok(Some((decoded, n))) = decode(&bytes, FRAME_BYTES_MAX) {
                    assert_eq!(encoded(&decoded), bytes[..n]);
                }
            }
        }
    }

    #[test]
    fn errors_read_well_in_a_log_line() {
        assert_eq!(
            DecodeError::TooLarge(300).to_string(),
            "frame of 300 bytes is over the limit"
        );
        // "HTTP" as a length: the peer speaks HTTP.
        assert!(DecodeError::TooLarge(0x4854_5450)
            .to_string()
            .ends_with("(its first bytes are \"HTTP\": HTTP, not the pairlink node protocol; is this an HTTP port?)"));
        assert_eq!(
            DecodeError::UnknownType(99).to_string(),
            "unknown frame type 99"
        );
        assert_eq!(
            DecodeError::Malformed("bad side").to_string(),
            "malformed frame: bad side"
        );
    }
}
