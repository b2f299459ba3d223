//! Accepting connections, and refusing them over `--max-connections`.

use super::conn;
use super::ratelimit::{held_back, RateLimited};
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

/// Connections accepted (or refused) in a row before other tasks run.
const ACCEPTS_PER_TURN: u32 = 32;

/// Accept failures logged at most once per this long (with a count of
/// the others), so a full file table does not flood the log.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts until cancelled; each connection gets its own task on `ex`.
pub async fn accept_loop(shared: Rc<Shared>, listener: Io<TcpListener>, ex: Rc<LocalExecutor>) {
    // A descriptor kept in reserve: when the process is out of them, it is
    // closed so that one waiting client can be accepted and told 503, then
    // taken again (the way nginx and libuv-based servers do it). Without
    // it that client would wait in the backlog unanswered.
    let mut spare = open_spare();
    let mut failures = RateLimited::default();
    let mut accepted_in_a_row: u32 = 0;
    loop {
        // A flood of connects (or of refusals) must not hold the thread:
        // every other task runs between each batch.
        accepted_in_a_row = accepted_in_a_row.wrapping_add(1);
        if accepted_in_a_row % ACCEPTS_PER_TURN == 0 {
            super::rt::yield_now().await;
        }
        // Accepting on the std listener keeps a refused socket out of the
        // reactor: it is answered and closed without ever being registered.
        let accepted = listener.read_with(|l| l.accept()).await;
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                let out_of_files = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                if spare.is_none() {
                    spare = open_spare(); // lost to an earlier shortage
                }
                let mut answered = false;
                if out_of_files && spare.take().is_some() {
                    if let Ok((stream, _)) = listener.get_ref().accept() {
                        shared.metrics(|m| {
                            m.connections_refused += 1;
                            m.count_response(503);
                        });
                        refuse(stream);
                        answered = true;
                    }
                    spare = open_spare();
                }
                if let Some(others) = failures.allow(ACCEPT_ERROR_LOG_EVERY) {
                    log::warn!(
                        "accept failed: {e}; {}{}",
                        if out_of_files {
                            "new connections get 503 until descriptors are free"
                        } else {
                            "pausing"
                        },
                        held_back(others)
                    );
                }
                if !answered {
                    Timer::after(ACCEPT_ERROR_PAUSE).await;
                }
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

/// "Too many open files" for this process, and for the system.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// The reserve descriptor; `None` if even that cannot be opened.
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
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
