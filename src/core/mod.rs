//! The sans-IO heart of a node: sessions, registry, links and timers.
//!
//! Nothing here reads a clock, draws random numbers or touches a socket:
//! `now` and fresh secrets are passed in, answers come back as values. That
//! makes every rule of the API testable in plain unit tests and lets a
//! simulation drive several nodes deterministically.

pub mod cluster;
pub mod error;
pub mod event;
pub mod events;
pub mod node;
pub mod reply;
pub mod session;
pub mod timers;

pub use error::ApiError;
pub use event::{Event, EventKind, Reason};
pub use node::{CancelKey, Node, NodeConfig, Output, PollHandle, SessionView, Started, Stats};
pub use reply::{Body, Reply};
pub use session::Addr;

/// Milliseconds on the node's monotonic clock, counted from its start.
pub type Millis = u64;
