//! The pairing workload: N pairs, C at a time. For each pair, side a
//! joins and polls; side b joins; a's poll returns `peer_online`; both
//! leave. The latency measured is from the start of b's join to the
//! moment a's poll answer carrying `peer_online` is read. A pairing counts
//! as done only when all of that, both leaves included, succeeded.
//!
//! Against Nchan (see [`super::target`]), a's join is local, a polls its
//! inbox channel, b's join publishes `peer_online` to it, and both leaves
//! delete the pair's channels.
//!
//! Each of the C workers, a task of its own, keeps two keep-alive
//! connections, one for side a
//! and one for side b; given several URLs, worker w sends a to node
//! `w mod n` and b to node `w+1 mod n`, so every pairing crosses nodes.
//!
//! No pairing starts after `--duration`; one in flight then ends within
//! its requests' deadlines (a's polls together get one poll deadline).

use super::args::Args;
use super::hist::Hist;
use super::http::{push_u64, with_deadline, Client, ErrKind};
use super::report::{self, Errors, Meter, Outcome};
use super::target::{Event, Events, Proto};
use pairlink::io::rt::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Polls of side a tried before a pairing counts as failed
/// (`no_peer_online`): the first should carry `peer_online`; more cover a
/// poll answered early and empty (a newer poll, a drain). All of them
/// together have one poll deadline. A poll that returns other events
/// without `peer_online` fails the pairing at once.
const POLLS_PER_PAIRING_MAX: u32 = 3;

struct Run {
    proto: Proto,
    prefix: String,
    pairs: u64,
    stop_at: Instant,
    next: Cell<u64>,
    done: Cell<u64>,
    last_done: Cell<Instant>,
    hist: RefCell<Hist>,
    errors: RefCell<Errors>,
}

/// Runs the workload and builds its report.
pub async fn run(ex: Rc<LocalExecutor>, args: Args) -> Outcome {
    let proto = Proto::of(&args);
    let n = args.urls.len();
    let workers = args.concurrency.min(args.pairs) as usize;
    let mut clients: Vec<(Client, Client)> = (0..workers)
        .map(|w| {
            (
                Client::new(args.urls[w % n].clone()),
                Client::new(args.urls[(w + 1) % n].clone()),
            )
        })
        .collect();
    // Connections are opened before the clock starts.
    let mut errors = Errors::default();
    let warm_deadline = Instant::now() + args.timeout;
    for (a, b) in &mut clients {
        for c in [a, b] {
            if let Err(e) = c.warm(warm_deadline).await {
                errors.add(e);
            }
        }
    }
    let started = Instant::now();
    let run = Rc::new(Run {
        proto,
        prefix: format!("p{:x}", args.seed),
        pairs: args.pairs,
        stop_at: started + args.duration,
        next: Cell::new(0),
        done: Cell::new(0),
        last_done: Cell::new(started),
        hist: RefCell::new(Hist::new()),
        errors: RefCell::new(errors),
    });
    let mut meter = Meter::new(&args.pids);
    let mut own = Meter::new(&[std::process::id()]);
    meter.start();
    own.start();
    // Each worker a task: an answer wakes only the worker it is for.
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(a, b)| ex.spawn(worker(run.clone(), a, b)))
        .collect();
    for t in tasks {
        t.await;
    }
    let cpu = meter.stop();
    let own_cpu = own.stop();
    let elapsed = run.last_done.get().duration_since(started);
    let done = run.done.get();
    let rate = done as f64 / elapsed.as_secs_f64();
    let hist = run.hist.borrow();
    let errors = run.errors.borrow();
    let mut w = report::head(&args);
    w.u64("pairs", args.pairs);
    w.u64("concurrency", workers as u64);
    w.u64("pairings", done);
    w.f64("elapsed_s", elapsed.as_secs_f64());
    w.f64("pairings_per_s", rate);
    report::write_latency(&mut w, "latency_us", &hist);
    errors.write(&mut w);
    report::write_generator_cpu(&mut w, own_cpu);
    let cpu_line = report::write_cpu(&mut w, &meter, cpu, "pairing", done);
    let summary = format!(
        "pairing against {} ({}): {done} of {} pairings at concurrency {workers} in {:.2} s, {rate:.0}/s\n  \
         b's join to a's peer_online: {}\n  {cpu_line}\n  errors: {}",
        args.target.name(),
        args.url_texts.join(", "),
        args.pairs,
        elapsed.as_secs_f64(),
        report::latency_summary(&hist),
        errors.summary()
    );
    Outcome {
        line: w.finish(),
        summary,
        ok: done > 0,
    }
}

/// Takes pair numbers until all are taken or the time bound passes.
async fn worker(run: Rc<Run>, mut ca: Client, mut cb: Client) {
    let mut pair = Vec::with_capacity(run.prefix.len() + 21);
    let mut events = Events::new();
    loop {
        let i = run.next.get();
        if i >= run.pairs || Instant::now() >= run.stop_at {
            return;
        }
        run.next.set(i + 1);
        pair.clear();
        pair.extend_from_slice(run.prefix.as_bytes());
        pair.push(b'-');
        push_u64(&mut pair, i);
        let pair = std::str::from_utf8(&pair).expect("ASCII");
        match one_pairing(&run, &mut ca, &mut cb, pair, &mut events).await {
            Ok(latency) => {
                run.hist.borrow_mut().record(latency);
                run.done.set(run.done.get() + 1);
                run.last_done.set(Instant::now());
            }
            Err(Failure::Request(e)) => run.errors.borrow_mut().add(e),
            Err(Failure::Named(name)) => run.errors.borrow_mut().add_named(name),
        }
    }
}

/// Why a pairing failed, beyond a failed request.
const NO_PEER_ONLINE: &str = "no_peer_online";

/// One pairing; the answer is b's join start to a's `peer_online`.
async fn one_pairing(
    run: &Run,
    ca: &mut Client,
    cb: &mut Client,
    pair: &str,
    events: &mut Events,
) -> Result<Duration, Failure> {
    let proto = run.proto;
    let mut a = proto.join(ca, pair, 'a').await?;
    // a's poll is written before b's join starts (the first future of a
    // `zip` is polled first), and the two run at once.
    let a_id = a.clone();
    let b_join_started = Cell::new(None);
    let poll_a = with_deadline(Instant::now() + proto.poll_deadline(), async {
        events.clear();
        for _ in 0..POLLS_PER_PAIRING_MAX {
            proto.poll(ca, &mut a, events).await?;
            if events.contains(Event::PeerOnline) {
                return Ok(Some(Instant::now()));
            }
            if !events.is_empty() {
                // Something else came first: not the pairing we measure.
                return Ok(None);
            }
        }
        Ok(None)
    });
    let join_b = async {
        b_join_started.set(Some(Instant::now()));
        let b = proto.join_peer(cb, pair, 'b').await;
        if b.is_err() {
            // a's poll would wait for nothing: leaving answers it at once.
            let _ = proto.leave(cb, &a_id).await;
        }
        b
    };
    let (online_at, b) = smol::future::zip(poll_a, join_b).await;
    let b = b?;
    if !b.peer_online_at_join {
        run.errors.borrow_mut().add_named("b_joined_offline");
    }
    // Both leave, whatever a's poll saw, so no session outlives the run.
    let (la, lb) = smol::future::zip(proto.leave(ca, &a_id), proto.leave(cb, &b)).await;
    let online_at = online_at?.ok_or(Failure::Named(NO_PEER_ONLINE))?;
    la.and(lb)?;
    let started = b_join_started.get().ok_or(Failure::Named(NO_PEER_ONLINE))?;
    Ok(online_at.saturating_duration_since(started))
}

/// A failed pairing: a request that failed, or a surprise.
enum Failure {
    Request(ErrKind),
    Named(&'static str),
}

impl From<ErrKind> for Failure {
    fn from(e: ErrKind) -> Failure {
        Failure::Request(e)
    }
}
