//! Accepting connections, and refusing them over `--max-connections`.

use super::conn;
use super::rt::{Io, LocalExecutor, Timer};
use super::Shared;
use crate::proto::response::{self, Response};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

/// How long to pause accepting after an error such as EMFILE, so a full
/// file table does not turn the loop into a busy spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts until cancelled; each connection gets its own task on `ex`.
pub async fn accept_loop(shared: Rc<Shared>, listener: Io<TcpListener>, ex: Rc<LocalExecutor>) {
    loop {
        // Accepting on the std listener keeps a refused socket out of the
        // reactor: it is answered and closed without ever being registered.
        let accepted = listener.read_with(|l| l.accept()).await;
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("accept failed: {e}; pausing");
                Timer::after(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let mut open = 0;
        shared.metrics(|m| open = m.connections_open);
        if open >= shared.max_connections as u64 {
            shared.metrics(|m| {
                m.connections_refused += 1;
                m.count_response(503);
            });
            refuse(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let stream = match Io::new(stream) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot register a connection: {e}");
                continue;
            }
        };
        shared.metrics(|m| {
            m.connections_open += 1;
            m.connections_accepted += 1;
        });
        ex.spawn_detached(conn::serve(shared.clone(), stream));
    }
}

/// Answers 503 with `Retry-After` and closes, without blocking: a fresh
/// socket's send buffer takes this small response at once.
fn refuse(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut r = Response::error(503, "overloaded", "too many open connections");
    r.close = true;
    let mut out = Vec::with_capacity(256);
    response::write(&mut out, &r, None, false);
    let _ = stream.write_all(&out);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Read what the client already sent, so closing does not reset the
    // connection before it reads the 503.
    let mut sink = [0u8; 1024];
    for _ in 0..8 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}
