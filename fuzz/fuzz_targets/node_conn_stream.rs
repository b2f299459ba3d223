#![no_main]

#[path = "node_checks.rs"]
mod node_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_checks::node_conn_stream(data));
