//! The node-to-node protocol, sans-IO.

pub mod frame;
