//! The event loop under the server: edge-triggered epoll, timers, an
//! executor for the thread's tasks, and a `block_on` that drives them.
//!
//! # Why not async-io's reactor
//!
//! smol's reactor (async-io over polling) is general: it serves many
//! threads, re-arms every socket with `epoll_ctl` after each event
//! (one-shot mode), wakes itself through an eventfd on every timer it
//! creates, sets a timerfd on every wait, and runs a helper thread that
//! takes over the reactor when the main thread is busy. `strace -c` of a
//! relay run counted about 25 system calls per relayed message, most of
//! them that machinery (BENCHMARKS.md). This loop is for one thread only:
//!
//! - each socket is registered once, edge-triggered for both directions;
//!   its readiness is remembered and cleared when a read or write comes
//!   back short or `WouldBlock` (a short read only while the peer has sent
//!   no urgent data, which stops a read early) ([`source`]);
//! - timers live on this thread (a slab, lanes per duration and a heap)
//!   and set the timeout of the one `epoll_wait` per turn ([`timer`]);
//! - tasks run on [`LocalExecutor`]: a slab, a run queue and a LIFO slot,
//!   a wake on this thread costing a push ([`executor`]);
//! - the eventfd is written only when another thread wakes a task while
//!   this one sleeps (a signal, a DNS lookup on the blocking pool).
//!
//! A relayed message then costs its reads and writes and a share of one
//! `epoll_wait`. smol still provides `future::or` and the blocking pool;
//! async-io still runs signals and outgoing cluster connects, which are
//! rare, on its own thread.

mod executor;
mod reactor;
mod source;
mod timer;

pub use executor::{
    defer_wakes, hint_data, yield_now, LocalExecutor, Task, HINT_DATA_SLOTS, HINT_OBJECT_BYTES,
};
pub use source::Io;
pub use timer::Timer;

use reactor::Reactor;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

/// Runs `future` to completion on this thread, driving sockets and timers
/// created with [`Io`] and [`Timer`]. Fails only when the event loop itself
/// cannot be created or waited on.
pub fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let reactor = Reactor::get()?;
    reactor.read_clock();
    let state = Arc::new(Wakeup {
        woken: AtomicBool::new(true),
        sleeping: AtomicBool::new(false),
        notify: reactor.notifier(),
    });
    let waker = Waker::from(state.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if state.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return Ok(out);
            }
        }
        // Sleep until an event, a timer, or a wake from another thread;
        // only look (timeout zero) when this thread already woke a task.
        state.sleeping.store(true, Ordering::SeqCst);
        let block = !state.woken.load(Ordering::SeqCst);
        reactor.turn(block, &state.sleeping)?;
    }
}

/// The monotonic clock as this thread's loop last read it: when its last
/// `epoll_wait` returned, or later, when a read last brought bytes. So it
/// is never earlier than the arrival of anything read so far: a deadline
/// set from it is never early counted from the arrival of the request that
/// set it. It can be behind the true time by what the tasks of one turn
/// take, so a timer set after long work in a turn may fire that much
/// sooner than its duration counted from the moment it was set. Reading
/// the clock once a turn and once a read, not in every timer and core
/// call, took five of the seven clock reads of a relayed message (about
/// 5 % of the server's user time). Outside a loop (no reactor on this
/// thread) it is the clock itself.
pub fn now() -> Instant {
    Reactor::with_current(Reactor::now).unwrap_or_else(Instant::now)
}

/// The wall clock when this thread's loop last returned from
/// `epoll_wait` (see [`now`]).
pub fn wall_now() -> std::time::SystemTime {
    Reactor::with_current(Reactor::wall).unwrap_or_else(std::time::SystemTime::now)
}

/// How a task woken from another thread reaches a sleeping loop.
struct Wakeup {
    /// The future asked to be polled again.
    woken: AtomicBool,
    /// The loop is in (or about to enter) `epoll_wait`.
    sleeping: AtomicBool,
    notify: reactor::Notifier,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A wake from this thread, while tasks run, costs two atomics; only
        // a sleeping loop needs the eventfd.
        if !self.woken.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            self.notify.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::future;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn timers_fire_in_order_and_not_early() {
        let start = Instant::now();
        let order = block_on(async {
            let (a, b) = future::zip(
                async {
                    Timer::after(Duration::from_millis(30)).await;
                    start.elapsed()
                },
                async {
                    Timer::after(Duration::from_millis(10)).await;
                    start.elapsed()
                },
            )
            .await;
            (a, b)
        })
        .unwrap();
        assert!(order.1 >= Duration::from_millis(10), "{order:?}");
        assert!(order.0 >= Duration::from_millis(30), "{order:?}");
        assert!(order.1 < order.0, "{order:?}");
    }

    /// `reset_after` keeps the registration of the earlier deadline; when
    /// that fires, the timer must register again, not complete.
    #[test]
    fn a_reset_timer_fires_at_its_new_deadline() {
        let start = Instant::now();
        let elapsed = block_on(async {
            let mut t = Timer::after(Duration::from_millis(40));
            // Registered by a first poll.
            assert!(future::poll_once(&mut t).await.is_none());
            Timer::after(Duration::from_millis(25)).await;
            t.reset_after(Duration::from_millis(40));
            (&mut t).await;
            start.elapsed()
        })
        .unwrap();
        assert!(elapsed >= Duration::from_millis(65), "{elapsed:?}");
    }

    /// A registered timer polled by another task (another waker) before
    /// its deadline must wake that one: the poll that skips the reactor
    /// is only for the same waker.
    #[test]
    fn a_timer_moved_to_another_task_wakes_that_task() {
        let ex = LocalExecutor::new();
        let start = Instant::now();
        let elapsed = block_on(ex.run(async {
            let mut t = Timer::after(Duration::from_millis(30));
            // Registered with this (the main future's) waker.
            assert!(future::poll_once(&mut t).await.is_none());
            let moved = ex.spawn(async move {
                t.await;
                start.elapsed()
            });
            // Bounded: a timer still waking the first task would leave
            // the second waiting for ever.
            future::or(async { Some(moved.await) }, async {
                Timer::after(Duration::from_secs(2)).await;
                None
            })
            .await
        }))
        .unwrap()
        .expect("the task that awaits the timer was never woken");
        assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
    }

    #[test]
    fn a_dropped_timer_does_not_fire_and_never_is_pending() {
        block_on(async {
            let t = Timer::after(Duration::from_millis(5));
            drop(t);
            let fired = future::or(
                async {
                    Timer::never().await;
                    true
                },
                async {
                    Timer::after(Duration::from_millis(20)).await;
                    false
                },
            )
            .await;
            assert!(!fired);
        })
        .unwrap();
    }

    #[test]
    fn set_after_moves_the_deadline() {
        let start = Instant::now();
        block_on(async {
            let mut t = Timer::after(Duration::from_secs(60));
            t.set_after(Duration::from_millis(10));
            t.await;
        })
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn echo_over_loopback_with_more_than_a_socket_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A blocking peer on another thread: it sends 4 MiB and reads back
        // what we echo.
        let peer = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let data: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
            let mut w = s.try_clone().unwrap();
            let sent = data.clone();
            let writer = std::thread::spawn(move || {
                w.write_all(&sent).unwrap();
                w.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            writer.join().unwrap();
            back == data
        });
        let listener = Io::new(listener).unwrap();
        block_on(async {
            let (stream, _) = listener.read_with(|l| l.accept()).await.unwrap();
            let stream = Io::new(stream).unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).await.unwrap();
            }
            stream
                .get_ref()
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
        })
        .unwrap();
        assert!(peer.join().unwrap(), "the echo came back whole");
    }

    #[test]
    fn a_wake_from_another_thread_reaches_a_sleeping_loop() {
        let (tx, rx) = async_channel::bounded::<u32>(1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send_blocking(7).unwrap();
        });
        let start = Instant::now();
        let got = block_on(async { rx.recv().await.unwrap() }).unwrap();
        sender.join().unwrap();
        assert_eq!(got, 7);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    /// A read stops at TCP's urgent mark with bytes still queued behind
    /// it. Taken for a drained socket, that short read would clear the
    /// readiness, and no new edge would ever bring the rest: a request
    /// sent around one urgent byte sat unread until its header timeout.
    #[test]
    fn a_read_stopped_by_urgent_data_does_not_lose_the_rest() {
        use rustix::net::{send, SendFlags};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let server = Io::new(server).unwrap();
        // Sent while the loop waits on a timer, so that every edge has
        // been taken in before the first read.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            send(&client, b"abc", SendFlags::empty()).unwrap();
            send(&client, b"X", SendFlags::OOB).unwrap();
            send(&client, b"defg", SendFlags::empty()).unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        let (first, second) = block_on(async {
            Timer::after(Duration::from_millis(150)).await;
            let mut buf = [0u8; 64];
            let n = server.read(&mut buf).await.unwrap();
            let first = buf[..n].to_vec();
            let second = future::or(
                async { Some(server.read(&mut buf).await.map(|n| buf[..n].to_vec())) },
                async {
                    Timer::after(Duration::from_millis(500)).await;
                    None
                },
            )
            .await;
            (first, second)
        })
        .unwrap();
        sender.join().unwrap();
        assert_eq!(first, b"abc", "the first read stops at the mark");
        let second = second.expect("the bytes after the mark were not read within 500 ms");
        assert_eq!(second.unwrap(), b"defg");
    }
}
