//! pairlink: two clients meet under a pair id and stay connected through
//! HTTP long polling, with one stateful handler per session.
//!
//! # Layout
//!
//! - [`limits`]: every fixed bound of the server, with compile-time checks
//!   between them.
//! - [`config`]: command line and `PAIRLINK_*` environment into a [`config::Config`].
//! - [`logger`]: the stderr logger (journald priorities when under systemd).
//! - [`proto`]: sans-IO bytes <-> values: HTTP/1.1 request framing, response
//!   writing, JSON encoding, ids, tokens and query strings.
//! - [`core`]: sans-IO state machines: the node's sessions (in a slab), its
//!   registry of `(pair, side)`, links between handlers, timers. Driven by
//!   `handle_*(now, ..)` calls; never reads a clock, draws randomness or
//!   touches a socket.
//! - [`api`]: maps a parsed HTTP request onto the core and the core's answers
//!   onto HTTP responses. Still sans-IO.
//! - [`metrics`]: counters and the Prometheus text exposition.
//! - [`cluster`]: sans-IO node-to-node protocol: frames, handshake, the
//!   per-connection state machine.
//! - [`io`]: the thin driver: its own event loop and executor (`io::rt`),
//!   listener, connections, timers, signals.
//! - [`systemd`]: `sd_notify` (READY, STATUS, WATCHDOG, STOPPING) with std alone.
//! - `prefetch`: a cache hint, used by the loop and the core.
// Two functions may use `unsafe`, one line each: taking the
// socket-activated listener fd (`systemd::take_fd3`), which std cannot do
// safely, and a cache prefetch hint (`prefetch`), an intrinsic
// that reads nothing but that std only offers as `unsafe` outside a
// `target_feature` function. Nothing else.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod cluster;
pub mod config;
pub mod core;
pub mod fdlimit;
pub mod io;
pub mod limits;
pub mod logger;
pub mod metrics;
pub(crate) mod prefetch;
pub mod proto;
pub mod systemd;
