//! Every fixed bound of the server, in one place, with the relations between
//! them checked at compile time. Limits an operator may change are flags (see
//! [`crate::config`]); these are the ones that are part of the contract or of
//! the design.

/// Longest pair id (API.md §1).
pub const PAIR_BYTES_MAX: usize = 64;
/// Longest session token (API.md §1).
pub const TOKEN_BYTES_MAX: usize = 128;
/// Longest node name; it is embedded in every session token.
pub const NODE_NAME_BYTES_MAX: usize = 32;
/// Random bytes in a session token's secret and in a minted pair id (128 bits).
pub const SECRET_BYTES: usize = 16;
/// Longest request target (API.md §2: 414 above it).
pub const TARGET_BYTES_MAX: usize = 8 * 1024;
/// Longest request head, request line and headers together (431 above it).
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Longest `timeout_ms` a poll may ask for (API.md §2).
pub const POLL_TIMEOUT_MS_MAX: u64 = 120_000;
/// Idempotency keys remembered per session (API.md §2).
pub const IDEMPOTENCY_KEYS_MAX: usize = 64;
/// Longest idempotency key (API.md §2).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 64;
/// Unacknowledged events one session holds at most; past it sends get 429.
/// Bounds the memory of many tiny (or empty) messages, which the byte
/// limits alone would not.
pub const SESSION_EVENTS_MAX: usize = 4096;
/// Bytes of memory one buffered event takes beyond its data, roughly; the
/// node holds at most `max(--max-total-buffer / TOTAL_EVENT_BYTES,
/// SESSION_EVENTS_MAX)` events.
pub const TOTAL_EVENT_BYTES: usize = 64;
/// Bytes of buffered, not yet parsed input a connection keeps while a poll
/// of it waits; past this it stops reading until the poll is answered.
pub const PIPELINE_BYTES_MAX: usize = HEAD_BYTES_MAX + TARGET_BYTES_MAX;
/// Bytes read from a socket at a time.
pub const READ_CHUNK_BYTES: usize = 4 * 1024;
/// A connection's read buffer is given back when idle and larger than this,
/// so that an idle waiting poll does not keep a large buffer alive.
pub const IDLE_BUFFER_BYTES_MAX: usize = 1024;
/// Seconds clients are told to wait in `Retry-After`.
pub const RETRY_AFTER_S: u32 = 1;
/// Longest a drain waits for answered polls to be written before exiting.
pub const DRAIN_MS_MAX: u64 = 3_000;
/// How long a join waits for other nodes' lookup replies before it treats
/// the silent ones as "not there".
pub const LOOKUP_TIMEOUT_MS: u64 = 1_000;
/// How long lookups still out after their join was answered (or re-sent
/// when a node came up) are kept for a reply. A node that is up answers
/// within a round trip, and one that stops answering is found down by its
/// heartbeats well before this; the bound is for one that keeps answering
/// heartbeats but never a lookup, which would otherwise grow them without
/// end.
pub const LATE_LOOKUP_MS: u64 = 60_000;
/// How long a request sent to another node (a forward, a delivery, a
/// resume) may go unanswered beyond its own wait before the client gets 503.
pub const FORWARD_SLACK_MS: u64 = 5_000;
/// Random bytes fetched from the OS at once for tokens and pair ids.
pub const RANDOM_POOL_BYTES: usize = 1024;

const _: () = assert!(TARGET_BYTES_MAX <= HEAD_BYTES_MAX);
const _: () = assert!(PIPELINE_BYTES_MAX >= HEAD_BYTES_MAX);
const _: () = assert!(RANDOM_POOL_BYTES % SECRET_BYTES == 0);
const _: () = assert!(IDEMPOTENCY_KEYS_MAX > 0);
