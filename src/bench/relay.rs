//! The relay workload: P pairs ping-pong one message at a time for D
//! seconds. Side a sends, b's waiting poll returns it, b answers, a's
//! waiting poll returns that, a sends again. Each side keeps one
//! connection for its polls, always with a poll waiting, and one for its
//! sends.
//!
//! A message's text is `N.T` padded with `x`: N numbers the messages of a
//! pair (0, 1, 2… alternating sides, so a lost or repeated one shows), T is
//! the send start in nanoseconds since the run's epoch. The receiver takes
//! the one-way latency as "poll answer read" minus T, in the one clock of
//! this process.

use super::args::{Args, Target};
use super::hist::Hist;
use super::http::{push_u64, with_deadline, Client, ErrKind, Url};
use super::report::{self, Errors, Meter, Outcome};
use super::target::{cancel_all, leave_all, Event, Events, Proto, Session};
use super::SETUP_TIME_MAX;
use async_channel::{Receiver, Sender};
use pairlink::io::rt::{LocalExecutor, Timer};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Pairs joining at the same time during set-up, so a large run does not
/// overflow the server's listen backlog.
pub const SETUP_CONCURRENCY: usize = 64;
/// Attempts of one send before the pair is given up.
const SEND_TRIES_MAX: u32 = 3;
/// Pause after a failed request before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Messages a side's send queue holds; in a ping-pong at most one waits.
const SEND_QUEUE_MAX: usize = 4;

/// State shared by every task of the run.
/// A pair that delivered nothing for this long at the end of the window
/// (or a tenth of the window, if longer) counts as stalled: at 512 pairs a
/// round trip takes tens of milliseconds.
const STALL_MIN: Duration = Duration::from_secs(1);
/// The error a stalled pair counts as.
const STALLED_PAIR: &str = "stalled_pair";

struct Run {
    proto: Proto,
    epoch: Instant,
    message_bytes: usize,
    idempotency_keys: bool,
    /// Messages read now are counted: set right after the server's CPU
    /// time is first read, cleared right before it is read again, so the
    /// counts and the CPU time cover the same window.
    measuring: Cell<bool>,
    stopped: Cell<bool>,
    messages: Cell<u64>,
    hist: RefCell<Hist>,
    errors: RefCell<Errors>,
    /// When each running pair last delivered a message: a pair whose
    /// ping-pong stopped (a message accepted and never delivered) would
    /// otherwise just fall silent, and the run would look clean.
    last_delivery: RefCell<Vec<Rc<Cell<Option<Instant>>>>>,
}

impl Run {
    fn error(&self, e: ErrKind) {
        self.errors.borrow_mut().add(e);
    }

    fn error_named(&self, name: &str) {
        self.errors.borrow_mut().add_named(name);
    }

    /// Counts a message read at `now` that was sent at `sent_ns`, if
    /// the run is measuring.
    fn received(&self, now: Instant, sent_ns: u64) {
        if self.measuring.get() {
            self.messages.set(self.messages.get() + 1);
            let now_ns = now.duration_since(self.epoch).as_nanos() as u64;
            self.hist
                .borrow_mut()
                .record(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
        }
    }
}

/// A side's send queue: the numbers of the messages its poll loop read,
/// each to be answered by its send loop. One side's loops are separate
/// tasks (a poll answer wakes only the poll loop it is for), and this
/// queue is all they share: a wake and no allocation per message, where a
/// channel allocates whenever its receiver waits.
#[derive(Default)]
struct SendQueue {
    items: RefCell<VecDeque<u64>>,
    waiting: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl SendQueue {
    /// Queues `n`; false when the queue is full or closed.
    fn try_send(&self, n: u64) -> bool {
        {
            let mut items = self.items.borrow_mut();
            if self.closed.get() || items.len() >= SEND_QUEUE_MAX {
                return false;
            }
            items.push_back(n);
        }
        self.wake();
        true
    }

    /// No more numbers: the send loop ends once it has sent those queued.
    fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    fn wake(&self) {
        let waker = self.waiting.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next number, or `None` once the queue is closed and empty.
    async fn recv(&self) -> Option<u64> {
        poll_fn(|cx| {
            if let Some(n) = self.items.borrow_mut().pop_front() {
                return Poll::Ready(Some(n));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            *self.waiting.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// `N.T` padded with `x` to `bytes`, written over `out` (a side's buffer,
/// reused for each of its messages).
fn payload(out: &mut Vec<u8>, n: u64, sent_ns: u64, bytes: usize) {
    out.clear();
    push_u64(out, n);
    out.push(b'.');
    push_u64(out, sent_ns);
    if out.len() < bytes {
        out.resize(bytes, b'x');
    }
}

/// The `(N, T)` of a payload.
fn parse_payload(text: &str) -> Option<(u64, u64)> {
    let (n, rest) = text.split_once('.')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    Some((n.parse().ok()?, rest[..digits].parse().ok()?))
}

/// Runs the workload and builds its report.
pub async fn run(ex: Rc<LocalExecutor>, args: Args) -> Outcome {
    let proto = Proto::of(&args);
    let now = Instant::now();
    let run = Rc::new(Run {
        proto,
        epoch: now,
        message_bytes: args.message_bytes,
        idempotency_keys: args.idempotency_keys && args.target == Target::Pairlink,
        measuring: Cell::new(false),
        stopped: Cell::new(false),
        messages: Cell::new(0),
        hist: RefCell::new(Hist::new()),
        errors: RefCell::new(Errors::default()),
        last_delivery: RefCell::default(),
    });
    let sessions: Rc<RefCell<Vec<(Url, Session)>>> = Rc::default();
    let (permit_tx, permit_rx) = async_channel::bounded(SETUP_CONCURRENCY);
    for _ in 0..SETUP_CONCURRENCY {
        permit_tx.try_send(()).expect("room for every permit");
    }
    let pairs = args.pairs as usize;
    let (ready_tx, ready_rx) = async_channel::bounded(pairs);
    let (go_tx, go_rx) = async_channel::bounded::<()>(1);
    let n = args.urls.len();
    let mut tasks = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let urls = (args.urls[i % n].clone(), args.urls[(i + 1) % n].clone());
        tasks.push(ex.spawn(pair_task(
            ex.clone(),
            run.clone(),
            format!("r{:x}-{i}", args.seed),
            urls,
            (permit_tx.clone(), permit_rx.clone()),
            ready_tx.clone(),
            go_rx.clone(),
            sessions.clone(),
        )));
    }
    // Set-up: every pair joined, or its failure counted. Bounded by the
    // worst case of every join waiting its whole deadline, and by
    // SETUP_TIME_MAX: the pairs not ready then are not waited for.
    let rounds = pairs.div_ceil(SETUP_CONCURRENCY) as u32 + 1;
    let setup_deadline = Instant::now() + (args.timeout * 4 * rounds).min(SETUP_TIME_MAX);
    let mut ready = 0;
    for _ in 0..pairs {
        match with_deadline(setup_deadline, async {
            ready_rx.recv().await.map_err(|_| ErrKind::Closed)
        })
        .await
        {
            Ok(true) => ready += 1,
            Ok(false) => {}
            Err(_) => break,
        }
    }
    let mut meter = Meter::new(&args.pids);
    let mut own = Meter::new(&[std::process::id()]);
    let mut messages_window = Duration::ZERO;
    let mut cpu = None;
    let mut own_cpu = None;
    if ready > 0 {
        drop(go_tx); // every pair task waiting on `go_rx` starts now
        Timer::after(args.warmup).await;
        meter.start();
        own.start();
        let started = Instant::now();
        run.measuring.set(true);
        Timer::at(started + args.duration).await;
        run.measuring.set(false);
        messages_window = started.elapsed();
        // A pair silent for the last STALL_MIN (or a tenth of the window,
        // if longer) has stopped: say so, as an error.
        let silent_since = Instant::now() - STALL_MIN.max(messages_window / 10);
        let stalled = count_stalled(&run.last_delivery.borrow(), silent_since);
        run.errors
            .borrow_mut()
            .add_count(STALLED_PAIR, stalled as u64);
        cpu = meter.stop();
        own_cpu = own.stop();
    }
    run.stopped.set(true);
    // Cancelled and gone, their sockets closed, before the leaves open
    // theirs (a pair task's loops are tasks it holds, cancelled with it).
    cancel_all(tasks);
    let sessions = std::mem::take(&mut *sessions.borrow_mut());
    leave_all(run.proto, &sessions, &run.errors).await;

    let messages = run.messages.get();
    let hist = run.hist.borrow();
    let errors = run.errors.borrow();
    let rate = messages as f64 / messages_window.as_secs_f64();
    let mut w = report::head(&args);
    w.u64("pairs", args.pairs);
    w.u64("pairs_ready", ready as u64);
    w.f64("duration_s", messages_window.as_secs_f64());
    w.f64("warmup_s", args.warmup.as_secs_f64());
    w.u64("message_bytes", args.message_bytes as u64);
    w.bool("idempotency_keys", run.idempotency_keys);
    w.u64("messages", messages);
    w.f64("messages_per_s", rate);
    report::write_latency(&mut w, "latency_us", &hist);
    errors.write(&mut w);
    report::write_generator_cpu(&mut w, own_cpu);
    let cpu_line = report::write_cpu(&mut w, &meter, cpu, "message", messages);
    let summary = format!(
        "relay against {} ({}): {ready} of {} pairs ran for {:.1} s: {messages} messages, {rate:.0}/s\n  \
         one-way latency: {}\n  {cpu_line}\n  errors: {}",
        args.target.name(),
        args.url_texts.join(", "),
        args.pairs,
        messages_window.as_secs_f64(),
        report::latency_summary(&hist),
        errors.summary()
    );
    Outcome {
        line: w.finish(),
        summary,
        ok: messages > 0,
    }
}

/// One pair: joins both sides, waits for the start, then runs both sides,
/// each as a poll loop and a send loop in tasks of their own, until the run
/// stops (this task is dropped, and the loops with it).
#[allow(clippy::too_many_arguments)]
async fn pair_task(
    ex: Rc<LocalExecutor>,
    run: Rc<Run>,
    pair: String,
    urls: (Url, Url),
    permits: (Sender<()>, Receiver<()>),
    ready: Sender<bool>,
    go: Receiver<()>,
    sessions: Rc<RefCell<Vec<(Url, Session)>>>,
) {
    let mut poll_a = Client::new(urls.0.clone());
    let mut send_a = Client::new(urls.0.clone());
    let mut poll_b = Client::new(urls.1.clone());
    let mut send_b = Client::new(urls.1.clone());
    let Ok(()) = permits.1.recv().await else {
        return;
    };
    let setup = async {
        let a = run.proto.join(&mut poll_a, &pair, 'a').await?;
        sessions.borrow_mut().push((urls.0.clone(), a.clone()));
        let b = run.proto.join(&mut poll_b, &pair, 'b').await?;
        sessions.borrow_mut().push((urls.1.clone(), b.clone()));
        // Every connection is open before the run starts (Nchan's joins
        // send nothing): hundreds of connects at once when it starts would
        // overflow the server's listen backlog and cost SYN retries.
        let deadline = Instant::now() + run.proto.timeout;
        for c in [&mut poll_a, &mut poll_b, &mut send_a, &mut send_b] {
            c.warm(deadline).await?;
        }
        Ok::<_, ErrKind>((a, b))
    };
    let result = setup.await;
    let _ = permits.0.try_send(());
    let (a, b) = match result {
        Ok(ab) => ab,
        Err(e) => {
            run.error(e);
            let _ = ready.try_send(false);
            return;
        }
    };
    let _ = ready.try_send(true);
    // Closed (never sent to) when the run starts.
    let _ = go.recv().await;
    let to_a = Rc::new(SendQueue::default());
    let to_b = Rc::new(SendQueue::default());
    let expected = Rc::new(Cell::new(0u64));
    let last = Rc::new(Cell::new(None));
    run.last_delivery.borrow_mut().push(last.clone());
    to_a.try_send(0);
    let loops = vec![
        ex.spawn(poll_loop(
            run.clone(),
            poll_a,
            a.clone(),
            (expected.clone(), last.clone()),
            to_a.clone(),
        )),
        ex.spawn(send_loop(run.clone(), send_a, a, to_a)),
        ex.spawn(poll_loop(
            run.clone(),
            poll_b,
            b.clone(),
            (expected, last),
            to_b.clone(),
        )),
        ex.spawn(send_loop(run, send_b, b, to_b)),
    ];
    for l in loops {
        l.await;
    }
}

/// Pairs whose last delivery is before `silent_since`, or that delivered
/// nothing at all.
fn count_stalled(last_delivery: &[Rc<Cell<Option<Instant>>>], silent_since: Instant) -> usize {
    last_delivery
        .iter()
        .filter(|last| last.get().is_none_or(|at| at < silent_since))
        .count()
}

/// Keeps a poll waiting; each message read is counted and answered
/// through the side's send queue.
async fn poll_loop(
    run: Rc<Run>,
    mut client: Client,
    mut s: Session,
    (expected, last): (Rc<Cell<u64>>, Rc<Cell<Option<Instant>>>),
    reply: Rc<SendQueue>,
) {
    let mut events = Events::new();
    while !run.stopped.get() {
        events.clear();
        if let Err(e) = run.proto.poll(&mut client, &mut s, &mut events).await {
            run.error(e);
            if matches!(e, ErrKind::Status(401 | 404)) {
                break; // the session is gone: this pair is over
            }
            Timer::after(RETRY_PAUSE).await;
            continue;
        }
        let now = Instant::now();
        for (kind, text) in events.iter() {
            if kind != Event::Message {
                continue;
            }
            let Some((n, sent_ns)) = parse_payload(text) else {
                run.error(ErrKind::Parse);
                continue;
            };
            let want = expected.get();
            if n < want {
                run.error_named("duplicate");
                continue;
            }
            if n > want {
                run.error_named("out_of_order");
            }
            expected.set(n + 1);
            last.set(Some(now));
            run.received(now, sent_ns);
            if !run.stopped.get() && !reply.try_send(n + 1) {
                run.error_named("send_queue_full");
            }
        }
    }
    reply.close();
}

/// Sends each message number it is given, retrying a failed send (with
/// the same `Idempotency-Key` when keys are on; without them a retried
/// message may arrive twice, and the receiver counts it as `duplicate`).
async fn send_loop(run: Rc<Run>, mut client: Client, s: Session, queue: Rc<SendQueue>) {
    let mut data = Vec::with_capacity(run.message_bytes.max(41));
    let mut key_buf = Vec::new();
    while let Some(n) = queue.recv().await {
        if run.stopped.get() {
            break;
        }
        let sent_ns = run.epoch.elapsed().as_nanos() as u64;
        payload(&mut data, n, sent_ns, run.message_bytes);
        let key = run.idempotency_keys.then(|| {
            key_buf.clear();
            key_buf.push(b'm');
            push_u64(&mut key_buf, n);
            std::str::from_utf8(&key_buf).expect("ASCII digits")
        });
        for _ in 0..SEND_TRIES_MAX {
            match run.proto.send(&mut client, &s, &data, key).await {
                Ok(()) => break,
                Err(e) => {
                    run.error(e);
                    if run.stopped.get() {
                        return;
                    }
                    Timer::after(RETRY_PAUSE).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_silent_at_the_end_are_stalled() {
        let now = Instant::now();
        let cell = |at: Option<Instant>| Rc::new(Cell::new(at));
        let lasts = [
            cell(Some(now)),
            cell(Some(now - Duration::from_secs(3))),
            cell(None),
            cell(Some(now - Duration::from_millis(500))),
        ];
        assert_eq!(count_stalled(&lasts, now - Duration::from_secs(1)), 2);
    }

    #[test]
    fn payload_round_trip() {
        let mut p = Vec::new();
        payload(&mut p, 7, 123_456_789, 32);
        assert_eq!(p.len(), 32);
        let text = String::from_utf8(p.clone()).unwrap();
        assert_eq!(parse_payload(&text), Some((7, 123_456_789)));
        payload(&mut p, 1, 2, 24);
        assert_eq!(p.len(), 24);
        assert_eq!(
            parse_payload(std::str::from_utf8(&p).unwrap()),
            Some((1, 2))
        );
        assert_eq!(parse_payload("x"), None);
    }
}
