//! The node-to-node protocol, sans-IO (docs/PROTOCOL.md).
//!
//! - [`frame`]: the frames as values, and their length-prefixed binary
//!   encoding and strict decoding.
//! - [`handshake`]: the mutual cookie proof that opens every connection.
//! - [`conn`]: one peer connection as a state machine driven with
//!   `handle_*(now, ..)` and `poll_*()`: framing, handshake, heartbeats,
//!   silence detection and the bounded outbound queue.
//! - [`backoff`]: reconnect delays, capped exponential with jitter.
//!
//! None of it reads a clock, draws random numbers or touches a socket: time,
//! nonces and jitter are passed in, bytes are passed in and taken out. The
//! smol driver in [`crate::io`] only moves bytes and sleeps until
//! `poll_timeout`.

pub mod backoff;
pub mod conn;
pub mod frame;
pub mod handshake;
