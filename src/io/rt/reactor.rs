//! The per-thread reactor: one epoll instance, the readiness of every
//! registered socket, and the timers.

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

/// Events taken from the kernel per `epoll_wait`; more wait for the next
/// turn, which comes at once. Few, so that what a turn prefetches for the
/// tasks it wakes is still in the cache when they run: under load a wait
/// found about 250 events at 512 pairs, and the system calls of the tasks
/// run before the last of them (a few KiB of kernel memory each) pushed
/// out what had been loaded for it. 32 took 5 % off the user time per
/// relayed message at 512 pairs, and made fewer misses pay at all
/// (BENCHMARKS.md, the tenth round); one more wait per 32 events costs
/// little.
const EVENTS_PER_WAIT_MAX: usize = 32;
/// The epoll key of the eventfd; socket keys are slab keys, far below it.
const NOTIFY_KEY: u64 = u64::MAX;

/// A direction of readiness.
#[derive(Clone, Copy, Debug)]
pub(super) enum Dir {
    Read,
    Write,
}

thread_local! {
    static REACTOR: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// What the loop knows of one registered socket.
#[derive(Debug, Default)]
struct Source {
    /// The kernel said readable (edge) and no read came back short since.
    readable: bool,
    writable: bool,
    /// The peer closed its side (or the socket failed): reads end in EOF
    /// or an error from now on and no further edge will come, so the
    /// read readiness is never cleared again.
    hung_up: bool,
    /// The peer sent TCP urgent data (`EPOLLPRI`). A read stops at the
    /// urgent mark with bytes still queued behind it, so on this socket a
    /// short read no longer means empty: only `WouldBlock` clears.
    urgent: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// Writes the eventfd: how another thread interrupts `epoll_wait`.
#[derive(Clone, Debug)]
pub(super) struct Notifier(Arc<OwnedFd>);

impl Notifier {
    pub(super) fn notify(&self) {
        // The counter saturating (EAGAIN) still leaves it readable, which is
        // all a wake needs.
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }
}

pub(super) struct Reactor {
    epoll: OwnedFd,
    notify: Notifier,
    sources: RefCell<Slab<Source>>,
    timers: RefCell<Timers>,
    events: RefCell<Vec<epoll::Event>>,
    /// Wakers collected during a turn, woken once no borrow is held.
    wake: RefCell<Vec<Waker>>,
    /// The clock as last read: when the last `epoll_wait` returned, or a
    /// later read brought bytes (see [`super::now`]).
    now: Cell<Instant>,
    /// The wall clock when the last `epoll_wait` returned.
    wall: Cell<SystemTime>,
}

impl Reactor {
    /// This thread's reactor, made on first use.
    pub(super) fn get() -> io::Result<Rc<Reactor>> {
        REACTOR.with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(r) = slot.as_ref() {
                return Ok(r.clone());
            }
            let r = Rc::new(Reactor::new()?);
            *slot = Some(r.clone());
            Ok(r)
        })
    }

    /// `f` of this thread's reactor, if it has one, without making it.
    pub(super) fn with_current<R>(f: impl FnOnce(&Reactor) -> R) -> Option<R> {
        REACTOR.with(|slot| slot.borrow().as_deref().map(f))
    }

    fn new() -> io::Result<Reactor> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        // Level-triggered: it stays readable until drained.
        epoll::add(&epoll, &efd, EventData::new_u64(NOTIFY_KEY), EventFlags::IN)?;
        Ok(Reactor {
            epoll,
            notify: Notifier(Arc::new(efd)),
            sources: RefCell::new(Slab::new()),
            timers: RefCell::new(Timers::default()),
            events: RefCell::new(Vec::with_capacity(EVENTS_PER_WAIT_MAX)),
            wake: RefCell::new(Vec::new()),
            now: Cell::new(Instant::now()),
            wall: Cell::new(SystemTime::now()),
        })
    }

    /// The clock as last read (see [`super::now`]).
    pub(super) fn now(&self) -> Instant {
        self.now.get()
    }

    /// Reads the monotonic clock and keeps the reading.
    pub(super) fn read_clock(&self) -> Instant {
        let now = Instant::now();
        self.now.set(now);
        now
    }

    /// The wall clock when the last turn's wait returned.
    pub(super) fn wall(&self) -> SystemTime {
        self.wall.get()
    }

    pub(super) fn notifier(&self) -> Notifier {
        self.notify.clone()
    }

    /// Registers a non-blocking socket once, edge-triggered both ways. It
    /// starts out ready: the first read or write finds out.
    pub(super) fn register(&self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut sources = self.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let key = entry.key();
        epoll::add(
            &self.epoll,
            fd,
            EventData::new_u64(key as u64),
            EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::PRI | EventFlags::ET,
        )?;
        entry.insert(Source {
            readable: true,
            writable: true,
            hung_up: false,
            urgent: false,
            reader: None,
            writer: None,
        });
        Ok(key)
    }

    /// Forgets a socket before it is closed.
    pub(super) fn deregister(&self, key: usize, fd: BorrowedFd<'_>) {
        let _ = epoll::delete(&self.epoll, fd);
        self.sources.borrow_mut().try_remove(key);
    }

    /// Ready when the socket is known ready in `dir`; else keeps the waker.
    pub(super) fn poll_ready(&self, key: usize, dir: Dir, cx: &mut Context<'_>) -> Poll<()> {
        let mut sources = self.sources.borrow_mut();
        let Some(source) = sources.get_mut(key) else {
            return Poll::Ready(()); // gone: let the syscall report it
        };
        let at = &*source as *const Source as usize;
        let (ready, slot) = match dir {
            Dir::Read => (source.readable, &mut source.reader),
            Dir::Write => (source.writable, &mut source.writer),
        };
        if ready {
            return Poll::Ready(());
        }
        // The next poll of this task starts here.
        super::executor::hint(at);
        let replaced = match slot {
            Some(w) if w.will_wake(cx.waker()) => None,
            _ => slot.replace(cx.waker().clone()),
        };
        drop(sources);
        // A different task waiting in the same direction is woken so that
        // it does not wait forever; it finds out for itself.
        if let Some(old) = replaced {
            old.wake();
        }
        Poll::Pending
    }

    /// Whether the peer has closed its side (or the socket failed), as the
    /// last events said.
    pub(super) fn hung_up(&self, key: usize) -> bool {
        self.sources.borrow().get(key).is_none_or(|s| s.hung_up)
    }

    /// The last read came back short: the socket is empty, and the next
    /// read waits for the next edge, unless urgent data may have stopped
    /// it early (then the next read finds out).
    pub(super) fn clear_after_short_read(&self, key: usize) {
        if let Some(source) = self.sources.borrow_mut().get_mut(key) {
            source.readable = source.hung_up || source.urgent;
        }
    }

    /// The last read (or write) said `WouldBlock`, or a write came back
    /// short: wait for the next edge.
    pub(super) fn clear(&self, key: usize, dir: Dir) {
        if let Some(source) = self.sources.borrow_mut().get_mut(key) {
            match dir {
                // A short read before the end of stream leaves the end
                // still to read, with no edge to announce it.
                Dir::Read => source.readable = source.hung_up,
                Dir::Write => source.writable = false,
            }
        }
    }

    /// Registers a timer; the id is what [`Reactor::update_timer`] and
    /// [`Reactor::remove_timer`] take.
    pub(super) fn insert_timer(
        &self,
        at: Instant,
        every: Option<Duration>,
        waker: &Waker,
    ) -> TimerId {
        self.timers.borrow_mut().insert(at, every, waker)
    }

    /// Keeps the newest waker of a registered timer. False when it fired.
    pub(super) fn update_timer(&self, id: TimerId, waker: &Waker) -> bool {
        self.timers.borrow_mut().update(id, waker)
    }

    pub(super) fn remove_timer(&self, id: TimerId) {
        self.timers.borrow_mut().remove(id);
    }

    /// One turn: wait for events (up to the next timer, or not at all when
    /// `block` is false), mark readiness, fire due timers, wake their tasks.
    /// `sleeping` is cleared as soon as the wait returns, so that tasks
    /// woken from here on do not write the eventfd.
    pub(super) fn turn(&self, block: bool, sleeping: &AtomicBool) -> io::Result<()> {
        let timeout = if block {
            let next = self.timers.borrow_mut().next_deadline();
            next.map(|at| timespec(at.saturating_duration_since(self.read_clock())))
        } else {
            Some(timespec(Duration::ZERO))
        };
        let mut events = self.events.borrow_mut();
        events.clear();
        let waited = epoll::wait(&self.epoll, spare_capacity(&mut *events), timeout.as_ref());
        sleeping.store(false, Ordering::SeqCst);
        match waited {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let mut wake = self.wake.borrow_mut();
        {
            let mut sources = self.sources.borrow_mut();
            for event in events.iter() {
                let key = event.data.u64();
                if key == NOTIFY_KEY {
                    let mut sink = [0u8; 8];
                    let _ = rustix::io::read(&*self.notify.0, &mut sink);
                    continue;
                }
                let Some(source) = usize::try_from(key).ok().and_then(|k| sources.get_mut(k))
                else {
                    continue;
                };
                let flags = event.flags;
                // Errors and hang-ups wake both sides: the syscall tells.
                let failed = flags.intersects(EventFlags::ERR | EventFlags::HUP);
                if failed || flags.contains(EventFlags::RDHUP) {
                    source.hung_up = true;
                }
                if flags.contains(EventFlags::PRI) {
                    source.urgent = true;
                }
                if failed || flags.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::PRI)
                {
                    source.readable = true;
                    wake.extend(source.reader.take());
                }
                if failed || flags.contains(EventFlags::OUT) {
                    source.writable = true;
                    wake.extend(source.writer.take());
                }
            }
        }
        drop(events);
        // The clock is read once a turn, not by every task that asks
        // (`super::now`): what this turn found arrived before now.
        self.wall.set(SystemTime::now());
        let now = self.read_clock();
        self.timers.borrow_mut().fire_due(now, &mut wake);
        let mut woken = std::mem::take(&mut *wake);
        drop(wake);
        // Each wake writes its task's waker state, rarely in cache among
        // hundreds of connections: ask for all of them first, so that their
        // misses overlap instead of each wake waiting for its own.
        for w in &woken {
            crate::prefetch::prefetch(w.data() as usize, super::executor::WAKE_READ_BYTES);
        }
        for w in woken.drain(..) {
            w.wake();
        }
        // Keep the allocation for the next turn.
        *self.wake.borrow_mut() = woken;
        Ok(())
    }
}

/// Where a registered timer is: its slot and the sequence number that slot
/// was given, so that a slot reused by a later timer is told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TimerId {
    key: usize,
    seq: u64,
}

/// The thread's timers: a slab of live ones, and their deadlines in lanes
/// or a min-heap.
///
/// Most timers here are header timeouts, `now` plus one duration, so their
/// deadlines come in order: a timer made with `Timer::after(d)` goes to the
/// back of the lane of `d` (O(1)), whatever other timers there are; any
/// other, or one past [`TIMER_LANES_MAX`] durations, into the heap
/// (O(log n)). Cancelling (the common case: the request came) only frees
/// the slot; the queued entry goes stale and is skipped when it comes to
/// the front, or dropped by a sweep once stale entries outnumber live ones
/// (O(n), paid for by as many cancellations). The `BTreeMap` this replaces
/// did a search and a rebalance for both.
#[derive(Debug, Default)]
struct Timers {
    entries: Slab<TimerEntry>,
    /// Per duration, `(deadline, seq, slot)` in deadline order.
    lanes: Vec<Lane>,
    /// `(deadline, seq, slot)`, soonest first.
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Lane {
    every: Duration,
    queue: VecDeque<(Instant, u64, usize)>,
}

#[derive(Debug)]
struct TimerEntry {
    seq: u64,
    waker: Waker,
}

/// Stale queue entries kept before a sweep, at least.
const TIMER_STALE_MIN: usize = 1024;
/// Durations with a lane of their own; an empty lane is reused for another.
const TIMER_LANES_MAX: usize = 4;

impl Timers {
    /// Registers a timer due at `at`, made as `now + every` when `every`
    /// is given.
    fn insert(&mut self, at: Instant, every: Option<Duration>, waker: &Waker) -> TimerId {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let key = self.entries.insert(TimerEntry {
            seq,
            waker: waker.clone(),
        });
        let lane = every.and_then(|d| self.lane(d));
        match lane.map(|i| &mut self.lanes[i].queue) {
            Some(queue) if queue.back().is_none_or(|&(last, _, _)| at >= last) => {
                queue.push_back((at, seq, key));
            }
            _ => self.heap.push(Reverse((at, seq, key))),
        }
        TimerId { key, seq }
    }

    /// The lane of `every`: its own, a new one, or an empty one taken over.
    fn lane(&mut self, every: Duration) -> Option<usize> {
        if let Some(i) = self.lanes.iter().position(|l| l.every == every) {
            return Some(i);
        }
        if self.lanes.len() < TIMER_LANES_MAX {
            self.lanes.push(Lane {
                every,
                queue: VecDeque::new(),
            });
            return Some(self.lanes.len() - 1);
        }
        let i = self.lanes.iter().position(|l| l.queue.is_empty())?;
        self.lanes[i].every = every;
        Some(i)
    }

    fn update(&mut self, id: TimerId, waker: &Waker) -> bool {
        match self.entries.get_mut(id.key) {
            Some(e) if e.seq == id.seq => {
                if !e.waker.will_wake(waker) {
                    e.waker = waker.clone();
                }
                true
            }
            _ => false,
        }
    }

    fn remove(&mut self, id: TimerId) {
        if self.entries.get(id.key).is_some_and(|e| e.seq == id.seq) {
            self.entries.remove(id.key);
        }
        let queued = self.lanes.iter().map(|l| l.queue.len()).sum::<usize>() + self.heap.len();
        let stale = queued.saturating_sub(self.entries.len());
        if stale > TIMER_STALE_MIN.max(self.entries.len()) {
            let entries = &self.entries;
            let live = |seq: u64, key: usize| entries.get(key).is_some_and(|e| e.seq == seq);
            for lane in &mut self.lanes {
                lane.queue.retain(|&(_, seq, key)| live(seq, key));
            }
            self.heap.retain(|Reverse((_, seq, key))| live(*seq, *key));
        }
    }

    fn is_live(&self, seq: u64, key: usize) -> bool {
        self.entries.get(key).is_some_and(|e| e.seq == seq)
    }

    /// The soonest live deadline; stale entries in front are dropped.
    fn next_deadline(&mut self) -> Option<Instant> {
        let mut soonest: Option<Instant> = None;
        for i in 0..self.lanes.len() {
            while let Some(&(at, seq, key)) = self.lanes[i].queue.front() {
                if self.is_live(seq, key) {
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                    break;
                }
                self.lanes[i].queue.pop_front();
            }
        }
        while let Some(&Reverse((at, seq, key))) = self.heap.peek() {
            if self.is_live(seq, key) {
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
                break;
            }
            self.heap.pop();
        }
        soonest
    }

    /// Takes the wakers of every timer due at `now`.
    fn fire_due(&mut self, now: Instant, wake: &mut Vec<Waker>) {
        for i in 0..self.lanes.len() {
            while let Some(&(at, seq, key)) = self.lanes[i].queue.front() {
                if at > now {
                    break;
                }
                self.lanes[i].queue.pop_front();
                self.take(seq, key, wake);
            }
        }
        while let Some(&Reverse((at, seq, key))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            self.take(seq, key, wake);
        }
    }

    fn take(&mut self, seq: u64, key: usize, wake: &mut Vec<Waker>) {
        if self.is_live(seq, key) {
            wake.push(self.entries.remove(key).waker);
        }
    }
}

/// A timeout for `epoll_wait`, rounded up to whole milliseconds so that a
/// timer never wakes the loop a little early, to find nothing due.
fn timespec(d: Duration) -> Timespec {
    let ms = d.as_nanos().div_ceil(1_000_000);
    let ms = i64::try_from(ms)
        .unwrap_or(i64::MAX / 1000)
        .min(i64::from(i32::MAX));
    Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    }
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("sources", &self.sources.borrow().len())
            .field("timers", &self.timers.borrow().entries.len())
            .finish_non_exhaustive()
    }
}

impl AsFd for Reactor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn timers_fire_soonest_first_and_cancelled_ones_never() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        let (late, wl) = waker();
        let (early, we) = waker();
        let (gone, wg) = waker();
        timers.insert(ms(30), Some(Duration::from_millis(30)), &wl);
        timers.insert(ms(10), None, &we);
        let cancelled = timers.insert(ms(5), Some(Duration::from_millis(5)), &wg);
        timers.remove(cancelled);
        assert_eq!(
            timers.next_deadline(),
            Some(ms(10)),
            "the stale top is skipped"
        );
        let mut wake = Vec::new();
        timers.fire_due(ms(20), &mut wake);
        wake.drain(..).for_each(Waker::wake);
        assert_eq!(early.0.load(Ordering::SeqCst), 1);
        assert_eq!(late.0.load(Ordering::SeqCst), 0);
        timers.fire_due(ms(30), &mut wake);
        wake.drain(..).for_each(Waker::wake);
        assert_eq!(late.0.load(Ordering::SeqCst), 1);
        assert_eq!(gone.0.load(Ordering::SeqCst), 0);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_reused_slot_is_not_mistaken_for_the_old_timer() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (_, w) = waker();
        let old = timers.insert(t0 + Duration::from_secs(5), None, &w);
        timers.remove(old);
        let new = timers.insert(t0 + Duration::from_secs(9), None, &w);
        assert_eq!(old.key, new.key, "the slot is reused");
        assert!(!timers.update(old, &w), "the old id is dead");
        timers.remove(old); // must not cancel the new timer
        assert!(timers.update(new, &w));
        // The old heap entry (5 s) is stale; the live deadline is 9 s.
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(9)));
    }

    fn queued(timers: &Timers) -> usize {
        timers.heap.len() + timers.lanes.iter().map(|l| l.queue.len()).sum::<usize>()
    }

    #[test]
    fn timers_of_one_duration_stay_in_their_lane_next_to_any_other() {
        // A far deadline (a long poll's) and a jittered backoff do not push
        // the header timeouts out of their lane into the heap.
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (_, w) = waker();
        let header = Duration::from_secs(10);
        timers.insert(t0 + Duration::from_secs(120), None, &w);
        timers.insert(
            t0 + Duration::from_millis(1234),
            Some(Duration::from_millis(1234)),
            &w,
        );
        for i in 0..100u64 {
            let at = t0 + Duration::from_millis(i) + header;
            let id = timers.insert(at, Some(header), &w);
            if i % 2 == 0 {
                timers.remove(id);
            }
        }
        let lane = timers.lanes.iter().find(|l| l.every == header).unwrap();
        assert_eq!(lane.queue.len(), 100);
        assert_eq!(timers.heap.len(), 1, "only the far deadline");
        // More durations than lanes: the rest go to the heap, still due in order.
        for d in 1..=10u64 {
            let d = Duration::from_secs(d);
            timers.insert(t0 + d, Some(d), &w);
        }
        assert!(timers.lanes.len() <= TIMER_LANES_MAX);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let mut wake = Vec::new();
        timers.fire_due(t0 + Duration::from_millis(10_049), &mut wake);
        // 1234 ms, 1..=10 s, and the 25 live header timeouts due by then.
        assert_eq!(wake.len(), 1 + 10 + 25);
    }

    #[test]
    fn stale_entries_stay_bounded_under_churn() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (_, w) = waker();
        let keep: Vec<TimerId> = (0..100)
            .map(|i| timers.insert(t0 + Duration::from_secs(1000 + i), None, &w))
            .collect();
        // Through the heap (no duration), then through a lane.
        for i in 0..200_000u64 {
            let every = (i >= 100_000).then_some(Duration::from_secs(10));
            let id = timers.insert(
                t0 + Duration::from_secs(10) + Duration::from_micros(i),
                every,
                &w,
            );
            timers.remove(id);
            assert!(queued(&timers) <= timers.entries.len() + TIMER_STALE_MIN + 1);
        }
        assert_eq!(timers.entries.len(), keep.len());
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1000)));
    }
}
