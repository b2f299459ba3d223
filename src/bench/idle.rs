//! The idle workload: N sessions, each on its own connection with one poll
//! waiting, held for D seconds. With `--pid`, the server's resident memory
//! before the first join and with every poll waiting gives the bytes one
//! waiting poll costs (its session, connection and poll together).
//!
//! Each session needs a socket here and one at the server: raise
//! `ulimit -n` for both above N (BENCHMARKS.md).

use super::args::Args;
use super::http::{Client, ErrKind, Url};
use super::report::{self, Errors, Meter, Outcome};
use super::target::{cancel_all, leave_all, Events, Proto, Session};
use super::SETUP_TIME_MAX;
use pairlink::io::rt::{LocalExecutor, Timer};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often the set-up progress and the server's waiting polls are read.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// How long the server may take to show every poll as waiting once the
/// joins are done.
const SETTLE_MAX: Duration = Duration::from_secs(10);
/// Pause after a failed poll before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

struct Run {
    proto: Proto,
    stopped: Cell<bool>,
    joined: Cell<u64>,
    failed: Cell<u64>,
    polls_returned: Cell<u64>,
    sessions: RefCell<Vec<(Url, Session)>>,
    errors: RefCell<Errors>,
}

/// Runs the workload and builds its report.
pub async fn run(ex: Rc<LocalExecutor>, args: Args) -> Outcome {
    let proto = Proto::of(&args);
    let meter = Meter::new(&args.pids);
    let mut cpu_meter = Meter::new(&args.pids);
    let mut own = Meter::new(&[std::process::id()]);
    let rss_before = meter.rss_bytes();
    cpu_meter.start();
    own.start();
    let run = Rc::new(Run {
        proto,
        stopped: Cell::new(false),
        joined: Cell::new(0),
        failed: Cell::new(0),
        polls_returned: Cell::new(0),
        sessions: RefCell::new(Vec::new()),
        errors: RefCell::new(Errors::default()),
    });
    let (permit_tx, permit_rx) = async_channel::bounded(args.concurrency as usize);
    for _ in 0..args.concurrency {
        permit_tx.try_send(()).expect("room for every permit");
    }
    let n = args.urls.len();
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.sessions)
        .map(|i| {
            let url = args.urls[i as usize % n].clone();
            let pair = format!("i{:x}-{i}", args.seed);
            ex.spawn(session_task(
                run.clone(),
                url,
                pair,
                permit_tx.clone(),
                permit_rx.clone(),
            ))
        })
        .collect();
    // Set-up is bounded by every join waiting its whole deadline, and by
    // SETUP_TIME_MAX.
    let rounds = args.sessions.div_ceil(args.concurrency) as u32 + 1;
    let setup_deadline = started + (args.timeout * 2 * rounds).min(SETUP_TIME_MAX);
    while run.joined.get() + run.failed.get() < args.sessions && Instant::now() < setup_deadline {
        Timer::after(CHECK_INTERVAL).await;
    }
    let setup_s = started.elapsed().as_secs_f64();
    // Then the server must see every poll.
    let mut controls: Vec<Client> = args.urls.iter().map(|u| Client::new(u.clone())).collect();
    let settle_deadline = Instant::now() + SETTLE_MAX;
    loop {
        let waiting = waiting_polls(&run, &mut controls).await;
        if waiting.is_some_and(|w| w >= run.joined.get()) || Instant::now() >= settle_deadline {
            break;
        }
        Timer::after(CHECK_INTERVAL).await;
    }
    Timer::after(args.duration).await;
    let polls = waiting_polls(&run, &mut controls).await;
    let rss_with = meter.rss_bytes();
    let cpu = cpu_meter.stop();
    let own_cpu = own.stop();
    run.stopped.set(true);
    // Cancelled and gone, their sockets closed, before the leaves open
    // theirs.
    cancel_all(tasks);
    let sessions = std::mem::take(&mut *run.sessions.borrow_mut());
    leave_all(proto, &sessions, &run.errors).await;

    let joined = run.joined.get();
    let errors = run.errors.borrow();
    let mut w = report::head(&args);
    w.u64("sessions", args.sessions);
    w.u64("joined", joined);
    w.f64("setup_s", setup_s);
    w.f64("hold_s", args.duration.as_secs_f64());
    match polls {
        Some(p) => w.u64("polls", p),
        None => w.str("polls", "unknown"),
    }
    w.u64("polls_returned_early", run.polls_returned.get());
    let mut memory_line = if meter.has_pids() {
        "server RSS: could not be read from /proc".to_string()
    } else {
        "server RSS: not measured (pass --pid)".to_string()
    };
    if let (Some(before), Some(with)) = (rss_before, rss_with) {
        let waiting = polls.unwrap_or(joined).max(1);
        let per_poll = with.saturating_sub(before) as f64 / waiting as f64;
        w.begin("server_memory");
        w.u64("rss_before_bytes", before);
        w.u64("rss_with_polls_bytes", with);
        w.f64("bytes_per_poll", per_poll);
        w.end();
        memory_line = format!(
            "server RSS {:.1} MiB before, {:.1} MiB with the polls: {:.0} bytes ({:.2} KiB) per waiting poll",
            before as f64 / 1048576.0,
            with as f64 / 1048576.0,
            per_poll,
            per_poll / 1024.0
        );
    }
    errors.write(&mut w);
    report::write_generator_cpu(&mut w, own_cpu);
    let cpu_line = report::write_cpu(&mut w, &cpu_meter, cpu, "session", joined);
    let mut errors_line = errors.summary();
    if errors.count("status_503") > 0 {
        errors_line.push_str(
            " (503: the server is at a limit; pairlink needs --max-connections above --sessions)",
        );
    }
    let summary = format!(
        "idle against {} ({}): {joined} of {} sessions joined in {setup_s:.2} s, {} polls waiting at the server\n  \
         {memory_line}\n  {cpu_line}\n  errors: {errors_line}",
        args.target.name(),
        args.url_texts.join(", "),
        args.sessions,
        polls.map_or("an unknown number of".to_string(), |p| p.to_string()),
    );
    Outcome {
        line: w.finish(),
        summary,
        ok: joined > 0 && polls.is_some_and(|p| p > 0),
    }
}

/// The polls waiting at all servers together, or `None` if one could not
/// be asked.
async fn waiting_polls(run: &Run, controls: &mut [Client]) -> Option<u64> {
    let mut sum = 0;
    for c in controls {
        match run.proto.waiting_polls(c).await {
            Ok(n) => sum += n,
            Err(e) => {
                run.errors.borrow_mut().add(e);
                return None;
            }
        }
    }
    Some(sum)
}

/// One session: joins (with a permit, so only `--concurrency` joins run at
/// once), then keeps a poll waiting on the same connection until the task
/// is dropped.
async fn session_task(
    run: Rc<Run>,
    url: Url,
    pair: String,
    permit_tx: async_channel::Sender<()>,
    permit_rx: async_channel::Receiver<()>,
) {
    let mut client = Client::new(url.clone());
    if permit_rx.recv().await.is_err() {
        return;
    }
    // The connection is opened under the permit too: Nchan's join sends
    // nothing, and thousands of connects at once would overflow the
    // server's listen backlog.
    let deadline = Instant::now() + run.proto.timeout;
    let joined = match client.warm(deadline).await {
        Ok(()) => run.proto.join(&mut client, &pair, 'a').await,
        Err(e) => Err(e),
    };
    let _ = permit_tx.try_send(());
    let mut s = match joined {
        Ok(s) => s,
        Err(e) => {
            run.errors.borrow_mut().add(e);
            run.failed.set(run.failed.get() + 1);
            return;
        }
    };
    run.sessions.borrow_mut().push((url, s.clone()));
    run.joined.set(run.joined.get() + 1);
    let mut events = Events::new();
    while !run.stopped.get() {
        events.clear();
        let result = run.proto.poll(&mut client, &mut s, &mut events).await;
        if run.stopped.get() {
            break;
        }
        run.polls_returned.set(run.polls_returned.get() + 1);
        if let Err(e) = result {
            run.errors.borrow_mut().add(e);
            if matches!(e, ErrKind::Status(401 | 404)) {
                return;
            }
            Timer::after(RETRY_PAUSE).await;
        }
    }
}
