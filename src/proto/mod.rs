//! Sans-IO protocol code: bytes in, values out (and back).

pub mod http;
pub mod ids;
pub mod json;
pub mod query;
pub mod response;
