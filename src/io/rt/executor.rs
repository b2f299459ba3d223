//! The loop's executor: the tasks of one thread in a slab, a run queue, and
//! a LIFO slot.
//!
//! # Why not smol's `LocalExecutor`
//!
//! smol's executor is its multi-threaded one behind a thread check: every
//! wake goes through a lock-free queue and its atomics, and every turn looks
//! for work to steal. On the relay that was about 1,200 instructions per
//! relayed message (BENCHMARKS.md). Here a wake on the loop's own thread is
//! a flag and a push onto a `VecDeque`; only wakes from other threads (a
//! signal, a DNS lookup) take a mutex.
//!
//! # The LIFO slot
//!
//! A task woken by the task being polled runs next, before the queue (as in
//! Tokio's scheduler). That is the path of an answer: the handler of a send
//! or a join answers the peer's waiting poll, and the peer's connection
//! writes it at once instead of after every other request of the batch.
//! At most [`LIFO_IN_A_ROW_MAX`] tasks run from the slot in a row, so two
//! tasks waking each other cannot starve the queue.

use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Tasks polled per poll of [`LocalExecutor::run`] before the event loop
/// gets a turn (sockets and timers).
const TICK_BUDGET: usize = 256;
/// Tasks run from the LIFO slot in a row before the queue's head.
const LIFO_IN_A_ROW_MAX: usize = 3;

static NEXT_EXECUTOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The executors living on this thread, for wakes made on it.
    static EXECUTORS: RefCell<Vec<(u64, Weak<Inner>)>> = const { RefCell::new(Vec::new()) };
    /// Inside [`defer_wakes`].
    static DEFER: Cell<bool> = const { Cell::new(false) };
    /// What the task being polled said it will read first when it runs
    /// again ([`hint`]).
    static HINT: Cell<usize> = const { Cell::new(0) };
    /// What else it said it will read soon after ([`hint_data`]).
    static HINT_DATA: Cell<[usize; HINT_DATA_SLOTS]> = const { Cell::new([0; HINT_DATA_SLOTS]) };
}

/// Says that the task being polled, once woken, will first read the cache
/// line at `addr` (the readiness of the socket it waits on): that line is
/// prefetched with the task's future and slot when the task is next to run.
pub(super) fn hint(addr: usize) {
    HINT.with(|h| h.set(addr));
}

/// Addresses a task may hint ([`hint_data`]): [`HINT_LINE_SLOTS`] given
/// in lines, then objects given in bytes.
pub const HINT_DATA_SLOTS: usize = 4;
pub const HINT_LINE_SLOTS: usize = 2;

/// Cache lines prefetched from each of the first [`HINT_LINE_SLOTS`]
/// [`hint_data`] addresses (a session's first lines, which hold what a relayed message
/// reads).
pub const HINT_DATA_LINES: usize = crate::core::session::SESSION_HOT_LINES;

/// Bytes prefetched from each of the other [`hint_data`] addresses (a
/// connection's link, with its reference counts).
pub const HINT_OBJECT_BYTES: usize = 128;

/// Says that the task being polled, whenever it is woken from now on, will
/// soon read what is at each of `addrs`, until it says others (0 for
/// none): they are prefetched with the task's future, instead of being
/// missed when its next request gets there. A connection names the session
/// its last request's token named and the peer session a send from it
/// delivers to ([`HINT_DATA_LINES`] lines of each), then its own link and
/// the link of the poll its last request answered ([`HINT_OBJECT_BYTES`]
/// of each). A hint only: an address no longer in use costs nothing but
/// the hint.
pub fn hint_data(addrs: [usize; HINT_DATA_SLOTS]) {
    HINT_DATA.with(|h| h.set(addrs));
}

/// Runs `f`; tasks it wakes go to the back of the run queue, not to the
/// LIFO slot. For a task that gathers what many others produce into one
/// write (a cluster connection's frames): run last, it writes them all.
pub fn defer_wakes<R>(f: impl FnOnce() -> R) -> R {
    let outer = DEFER.with(|d| d.replace(true));
    let out = f();
    DEFER.with(|d| d.set(outer));
    out
}

/// Lets every other task that is ready run before this one goes on: the
/// task goes to the back of the run queue (not the LIFO slot), and the
/// loop looks at its sockets and timers at least once per [`TICK_BUDGET`]
/// tasks. For a task that would otherwise keep going for as long as its
/// peer keeps it busy (a client pipelining requests).
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        defer_wakes(|| cx.waker().wake_by_ref());
        std::task::Poll::Pending
    })
    .await;
}

/// Runs `!Send` futures on the current thread, under [`super::block_on`].
pub struct LocalExecutor {
    inner: Rc<Inner>,
}

/// A spawned task: awaiting it gives its output; dropping it cancels the
/// task, unless it was detached.
#[must_use = "dropping a task cancels it; use detach() to let it run"]
pub struct Task<T> {
    join: Rc<RefCell<Join<T>>>,
    exec: Weak<Inner>,
    task: TaskRef,
    detached: bool,
}

struct Join<T> {
    output: Option<T>,
    done: bool,
    waker: Option<Waker>,
}

/// A task as the run queue holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TaskRef {
    key: usize,
    gen: u64,
    /// Where the task's future is, and its size: prefetched when the task
    /// is woken and when it is next in the queue (see [`Inner::tick`]).
    future_at: usize,
    future_bytes: usize,
    /// Where the task's slot was, the line it said it reads first
    /// ([`hint`]) and what it said it reads soon after ([`hint_data`]),
    /// when it last ran: prefetched with the future.
    slot_at: usize,
    hint_at: usize,
    data_at: [usize; HINT_DATA_SLOTS],
}

impl TaskRef {
    /// Starts loading the task's future, slot and hinted line into the
    /// cache.
    fn prefetch(&self) {
        use crate::prefetch::prefetch;
        prefetch(self.future_at, self.future_bytes);
        // Not known before the task's first poll, or no line hinted.
        if self.slot_at != 0 {
            prefetch(self.slot_at, std::mem::size_of::<Slot>());
        }
        if self.hint_at != 0 {
            prefetch(self.hint_at, 1);
        }
        let (lines, objects) = self.data_at.split_at(HINT_LINE_SLOTS);
        for &at in lines {
            if at != 0 {
                crate::prefetch::prefetch_lines::<HINT_DATA_LINES>(at);
            }
        }
        for &at in objects {
            if at != 0 {
                crate::prefetch::prefetch(at, HINT_OBJECT_BYTES);
            }
        }
    }
}

struct Slot {
    gen: u64,
    /// `None` while the task is being polled, and so its waker: moved out
    /// for the poll and back, rather than a new `Waker` made (and its
    /// reference count moved twice, atomically) for each one.
    future: Option<BoxFuture>,
    waker: Option<Waker>,
    wake: Arc<TaskWake>,
}

struct Inner {
    id: u64,
    tasks: RefCell<Slab<Slot>>,
    next_gen: Cell<u64>,
    queue: RefCell<VecDeque<TaskRef>>,
    lifo: Cell<Option<TaskRef>>,
    /// A task is being polled: what it wakes goes to the LIFO slot.
    polling: Cell<bool>,
    /// `run` returned `Pending` with nothing to do; a wake must wake it.
    idle: Cell<bool>,
    loop_waker: RefCell<Option<Waker>>,
    remote: Arc<Remote>,
}

/// What a wake from another thread reaches.
struct Remote {
    queue: Mutex<Vec<TaskRef>>,
    pending: AtomicBool,
    loop_waker: Mutex<Option<Waker>>,
}

/// What a wake on the loop's thread reads of a [`TaskWake`]: its first
/// bytes, which the reactor prefetches before waking.
pub(super) const WAKE_READ_BYTES: usize = 88;

/// A task's waker.
///
/// In C order, so that what a wake on the loop's thread reads is in the
/// first [`WAKE_READ_BYTES`], which the reactor prefetches before waking
/// (a test holds it); `remote`, for wakes from other threads, comes after.
#[repr(C)]
struct TaskWake {
    /// In the queue or the LIFO slot, or about to be.
    scheduled: AtomicBool,
    /// [`TaskRef::future_bytes`], in the room the flag leaves (a future's
    /// size is its type's, far below 4 GiB).
    future_bytes: u32,
    exec: u64,
    /// [`TaskRef::slot_at`], [`TaskRef::hint_at`] and [`TaskRef::data_at`]
    /// as of the last poll.
    slot_at: AtomicUsize,
    hint_at: AtomicUsize,
    data_at: [AtomicUsize; HINT_DATA_SLOTS],
    /// The rest of the task's [`TaskRef`].
    key: usize,
    gen: u64,
    future_at: usize,
    remote: Arc<Remote>,
}

impl TaskWake {
    /// The task, with where its slot and hinted lines were.
    fn task(&self) -> TaskRef {
        TaskRef {
            key: self.key,
            gen: self.gen,
            future_at: self.future_at,
            future_bytes: self.future_bytes as usize,
            slot_at: self.slot_at.load(Ordering::Relaxed),
            hint_at: self.hint_at.load(Ordering::Relaxed),
            data_at: std::array::from_fn(|i| self.data_at[i].load(Ordering::Relaxed)),
        }
    }
}

impl Wake for TaskWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        // Woken by the running task, it will most often run next (the
        // LIFO slot): its future, rarely in cache among hundreds of
        // connections, is on its way meanwhile.
        let task = self.task();
        task.prefetch();
        let exec = EXECUTORS.with(|list| {
            list.borrow()
                .iter()
                .find(|(id, _)| *id == self.exec)
                .and_then(|(_, weak)| weak.upgrade())
        });
        match exec {
            Some(inner) => inner.schedule(task),
            None => self.remote.push(task),
        }
    }
}

impl Remote {
    fn push(&self, task: TaskRef) {
        lock(&self.queue).push(task);
        self.pending.store(true, Ordering::Release);
        if let Some(w) = lock(&self.loop_waker).as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Stores `waker` in `slot`, cloning only when it is a different one (the
/// loop's waker is the same on every turn).
fn keep_waker(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Queues a task woken on this thread.
    fn schedule(&self, task: TaskRef) {
        if self.polling.get() && !DEFER.with(Cell::get) {
            if let Some(older) = self.lifo.replace(Some(task)) {
                self.queue.borrow_mut().push_back(older);
            }
        } else {
            self.queue.borrow_mut().push_back(task);
        }
        if self.idle.replace(false) {
            if let Some(w) = self.loop_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }

    fn take_remote(&self) {
        if self.remote.pending.swap(false, Ordering::AcqRel) {
            let woken = std::mem::take(&mut *lock(&self.remote.queue));
            self.queue.borrow_mut().extend(woken);
        }
    }

    /// Runs up to `budget` tasks; true when more are ready.
    fn tick(&self, budget: usize) -> bool {
        self.take_remote();
        let mut lifo_in_a_row = 0;
        for _ in 0..budget {
            let from_lifo = if lifo_in_a_row < LIFO_IN_A_ROW_MAX {
                self.lifo.take()
            } else {
                None
            };
            let task = match from_lifo {
                Some(t) => {
                    lifo_in_a_row += 1;
                    t
                }
                None => {
                    lifo_in_a_row = 0;
                    let mut queue = self.queue.borrow_mut();
                    if let Some(t) = self.lifo.take() {
                        queue.push_back(t);
                    }
                    let Some(t) = queue.pop_front() else {
                        break;
                    };
                    // The one after it, unless this one wakes another (which
                    // then is prefetched as it is woken): its future is
                    // loaded while this one runs, not when it starts.
                    if let Some(next) = queue.front() {
                        next.prefetch();
                    }
                    t
                }
            };
            self.run_task(task);
        }
        self.lifo.get().is_some()
            || !self.queue.borrow().is_empty()
            || self.remote.pending.load(Ordering::Acquire)
    }

    fn run_task(&self, task: TaskRef) {
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(task.key).filter(|s| s.gen == task.gen) else {
                return; // cancelled or finished since it was woken
            };
            let (Some(future), Some(waker)) = (slot.future.take(), slot.waker.take()) else {
                return;
            };
            slot.wake.scheduled.store(false, Ordering::Release);
            (future, waker)
        };
        self.polling.set(true);
        HINT.with(|h| h.set(0));
        // Kept until the task says otherwise: its session stays its session.
        HINT_DATA.with(|h| h.set(task.data_at));
        let done = future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        self.polling.set(false);
        let mut tasks = self.tasks.borrow_mut();
        let finished = match tasks.get_mut(task.key).filter(|s| s.gen == task.gen) {
            Some(slot) if !done => {
                let slot_at = slot as *const Slot as usize;
                slot.wake.slot_at.store(slot_at, Ordering::Relaxed);
                let hint_at = HINT.with(Cell::get);
                slot.wake.hint_at.store(hint_at, Ordering::Relaxed);
                let data_at = HINT_DATA.with(Cell::get);
                for (at, to) in data_at.into_iter().zip(&slot.wake.data_at) {
                    to.store(at, Ordering::Relaxed);
                }
                slot.future = Some(future);
                slot.waker = Some(waker);
                return;
            }
            Some(_) => Some(tasks.remove(task.key)),
            None => None, // cancelled while it ran
        };
        // Dropped with no borrow held: a future's drop may cancel tasks.
        drop(tasks);
        drop(finished);
        drop(future);
        drop(waker);
    }

    fn cancel(&self, task: TaskRef) {
        let removed = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get(task.key) {
                Some(slot) if slot.gen == task.gen => Some(tasks.remove(task.key)),
                _ => None,
            }
        };
        drop(removed);
    }
}

impl LocalExecutor {
    /// An executor for this thread.
    pub fn new() -> LocalExecutor {
        let inner = Rc::new(Inner {
            id: NEXT_EXECUTOR_ID.fetch_add(1, Ordering::Relaxed),
            tasks: RefCell::new(Slab::new()),
            next_gen: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            lifo: Cell::new(None),
            polling: Cell::new(false),
            idle: Cell::new(false),
            loop_waker: RefCell::new(None),
            remote: Arc::new(Remote {
                queue: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
                loop_waker: Mutex::new(None),
            }),
        });
        EXECUTORS.with(|list| {
            let mut list = list.borrow_mut();
            list.retain(|(_, w)| w.strong_count() > 0);
            list.push((inner.id, Rc::downgrade(&inner)));
        });
        LocalExecutor { inner }
    }

    /// Starts `future` as a task; it first runs on the next tick.
    pub fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Task<T> {
        let join = Rc::new(RefCell::new(Join {
            output: None,
            done: false,
            waker: None,
        }));
        let result = join.clone();
        // Boxed apart: an async block that captured the future and then
        // awaited it would hold it twice (the capture and the await).
        let mut future = Box::pin(future);
        let task = self.insert(Box::pin(async move {
            let output = future.as_mut().await;
            let waker = {
                let mut j = result.borrow_mut();
                j.output = Some(output);
                j.done = true;
                j.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }));
        Task {
            join,
            exec: Rc::downgrade(&self.inner),
            task,
            detached: false,
        }
    }

    /// Starts `future` as a task no one awaits or cancels: one allocation,
    /// the future itself. For the many small tasks, one per connection.
    pub fn spawn_detached(&self, future: impl Future<Output = ()> + 'static) {
        self.insert(Box::pin(future));
    }

    fn insert(&self, future: BoxFuture) -> TaskRef {
        let inner = &self.inner;
        let gen = inner.next_gen.get();
        inner.next_gen.set(gen.wrapping_add(1));
        let task = {
            let mut tasks = inner.tasks.borrow_mut();
            let entry = tasks.vacant_entry();
            let task = TaskRef {
                key: entry.key(),
                gen,
                future_at: &*future as *const dyn Future<Output = ()> as *const u8 as usize,
                future_bytes: std::mem::size_of_val(&*future),
                slot_at: 0,
                hint_at: 0,
                data_at: [0; HINT_DATA_SLOTS],
            };
            let wake = Arc::new(TaskWake {
                scheduled: AtomicBool::new(true),
                exec: inner.id,
                future_bytes: u32::try_from(task.future_bytes).unwrap_or(u32::MAX),
                slot_at: AtomicUsize::new(0),
                hint_at: AtomicUsize::new(0),
                data_at: std::array::from_fn(|_| AtomicUsize::new(0)),
                key: task.key,
                gen: task.gen,
                future_at: task.future_at,
                remote: inner.remote.clone(),
            });
            entry.insert(Slot {
                gen,
                future: Some(future),
                waker: Some(Waker::from(wake.clone())),
                wake,
            });
            task
        };
        // To the back of the queue: a new connection waits its turn.
        inner.queue.borrow_mut().push_back(task);
        if inner.idle.replace(false) {
            if let Some(w) = inner.loop_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
        task
    }

    /// Runs the spawned tasks while driving `main`, until `main` completes.
    pub async fn run<T>(&self, main: impl Future<Output = T>) -> T {
        let mut main = pin!(main);
        let main_wake = Arc::new(MainWake {
            woken: AtomicBool::new(true),
            loop_waker: Mutex::new(None),
        });
        let main_waker = Waker::from(main_wake.clone());
        let inner = &self.inner;
        poll_fn(|cx| {
            keep_waker(&mut lock(&main_wake.loop_waker), cx.waker());
            if main_wake.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = main.as_mut().poll(&mut Context::from_waker(&main_waker))
                {
                    return Poll::Ready(out);
                }
            }
            if inner.tick(TICK_BUDGET) || main_wake.woken.load(Ordering::Acquire) {
                // More to do: let the loop look at sockets (without
                // sleeping) and come back.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            keep_waker(&mut inner.loop_waker.borrow_mut(), cx.waker());
            keep_waker(&mut lock(&inner.remote.loop_waker), cx.waker());
            inner.idle.set(true);
            // A wake from another thread between the tick and here found
            // no waker: look once more.
            if inner.remote.pending.load(Ordering::Acquire) {
                inner.idle.set(false);
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await
    }
}

impl Default for LocalExecutor {
    fn default() -> Self {
        LocalExecutor::new()
    }
}

impl Drop for LocalExecutor {
    fn drop(&mut self) {
        // Drop every task's future with no borrow held (their drops may
        // cancel other tasks, which then find nothing to cancel).
        let tasks = std::mem::take(&mut *self.inner.tasks.borrow_mut());
        drop(tasks);
    }
}

impl std::fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("tasks", &self.inner.tasks.borrow().len())
            .finish_non_exhaustive()
    }
}

/// The waker of `run`'s main future.
struct MainWake {
    woken: AtomicBool,
    loop_waker: Mutex<Option<Waker>>,
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            if let Some(w) = lock(&self.loop_waker).as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

impl<T> Task<T> {
    /// Lets the task run to completion with no one awaiting it.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut join = self.join.borrow_mut();
        if let Some(output) = join.output.take() {
            return Poll::Ready(output);
        }
        join.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if self.detached || self.join.borrow().done {
            return;
        }
        if let Some(inner) = self.exec.upgrade() {
            inner.cancel(self.task);
        }
    }
}

impl<T> std::fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("task", &self.task).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{block_on, Timer};
    use super::*;
    use std::time::Duration;

    #[test]
    fn tasks_give_their_output_and_detached_ones_run_to_the_end() {
        let ex = LocalExecutor::new();
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let out = block_on(ex.run(async {
            ex.spawn_detached(async move {
                Timer::after(Duration::from_millis(5)).await;
                r.set(true);
            });
            let t = ex.spawn(async { 6 * 7 });
            let v = t.await;
            Timer::after(Duration::from_millis(20)).await;
            v
        }))
        .unwrap();
        assert_eq!(out, 42);
        assert!(ran.get());
    }

    #[test]
    fn a_dropped_task_is_cancelled_and_its_future_dropped() {
        struct Flag(Rc<Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let ex = LocalExecutor::new();
        let dropped = Rc::new(Cell::new(false));
        let reached = Rc::new(Cell::new(false));
        let (d, r) = (dropped.clone(), reached.clone());
        block_on(ex.run(async {
            let t = ex.spawn(async move {
                let _flag = Flag(d);
                Timer::after(Duration::from_millis(30)).await;
                r.set(true);
            });
            Timer::after(Duration::from_millis(5)).await;
            drop(t);
            assert!(dropped.get(), "cancelling drops the future at once");
            Timer::after(Duration::from_millis(50)).await;
        }))
        .unwrap();
        assert!(!reached.get());
    }

    #[test]
    fn a_task_woken_by_the_running_task_runs_next() {
        // Task `a` answers `b` (waiting on a channel) while `c`, `d` and `e`
        // are queued: `b` runs right after `a`, before them.
        let ex = LocalExecutor::new();
        let order = Rc::new(RefCell::new(Vec::new()));
        let (tx, rx) = async_channel::bounded::<()>(1);
        block_on(ex.run(async {
            let o = order.clone();
            let b = ex.spawn(async move {
                rx.recv().await.unwrap();
                o.borrow_mut().push("b");
            });
            // Let `b` start waiting.
            Timer::after(Duration::from_millis(5)).await;
            let o = order.clone();
            let a = ex.spawn(async move {
                tx.try_send(()).unwrap();
                o.borrow_mut().push("a");
            });
            let rest: Vec<_> = ["c", "d", "e"]
                .into_iter()
                .map(|name| {
                    let o = order.clone();
                    ex.spawn(async move { o.borrow_mut().push(name) })
                })
                .collect();
            a.await;
            b.await;
            for t in rest {
                t.await;
            }
        }))
        .unwrap();
        assert_eq!(*order.borrow(), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_deferred_wake_goes_to_the_back_of_the_queue() {
        let ex = LocalExecutor::new();
        let order = Rc::new(RefCell::new(Vec::new()));
        let (tx, rx) = async_channel::bounded::<()>(1);
        block_on(ex.run(async {
            let o = order.clone();
            let writer = ex.spawn(async move {
                rx.recv().await.unwrap();
                o.borrow_mut().push("writer");
            });
            Timer::after(Duration::from_millis(5)).await;
            let o = order.clone();
            let a = ex.spawn(async move {
                defer_wakes(|| tx.try_send(()).unwrap());
                o.borrow_mut().push("a");
            });
            let o = order.clone();
            let c = ex.spawn(async move { o.borrow_mut().push("c") });
            a.await;
            c.await;
            writer.await;
        }))
        .unwrap();
        assert_eq!(*order.borrow(), ["a", "c", "writer"]);
    }

    #[test]
    fn tasks_waking_each_other_do_not_starve_the_queue() {
        // Two tasks ping-pong forever through the LIFO slot; a third,
        // queued, still runs.
        let ex = LocalExecutor::new();
        let (a_tx, a_rx) = async_channel::bounded::<()>(1);
        let (b_tx, b_rx) = async_channel::bounded::<()>(1);
        block_on(ex.run(async {
            let b_tx2 = b_tx.clone();
            let _a = ex.spawn(async move {
                while a_rx.recv().await.is_ok() {
                    let _ = b_tx2.try_send(());
                }
            });
            let _b = ex.spawn(async move {
                while b_rx.recv().await.is_ok() {
                    let _ = a_tx.try_send(());
                }
            });
            Timer::after(Duration::from_millis(2)).await;
            b_tx.try_send(()).unwrap();
            let third = ex.spawn(async { 1 });
            assert_eq!(third.await, 1);
        }))
        .unwrap();
    }

    #[test]
    fn a_wake_from_another_thread_runs_the_task() {
        let ex = LocalExecutor::new();
        let (tx, rx) = async_channel::bounded::<u32>(1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            tx.send_blocking(9).unwrap();
        });
        let got = block_on(ex.run(async {
            let t = ex.spawn(async move { rx.recv().await.unwrap() });
            t.await
        }))
        .unwrap();
        sender.join().unwrap();
        assert_eq!(got, 9);
    }

    #[test]
    fn what_a_local_wake_reads_is_in_its_first_bytes() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(TaskWake, scheduled), 0);
        assert!(offset_of!(TaskWake, future_bytes) < 8);
        assert_eq!(offset_of!(TaskWake, future_at) + 8, WAKE_READ_BYTES);
        assert!(offset_of!(TaskWake, remote) >= WAKE_READ_BYTES);
    }

    #[test]
    fn a_woken_task_is_queued_with_its_slot_and_hinted_line() {
        let ex = LocalExecutor::new();
        let (tx, rx) = async_channel::bounded::<()>(1);
        block_on(ex.run(async {
            let t = ex.spawn(async move {
                hint(0x5a40);
                rx.recv().await.unwrap();
            });
            Timer::after(Duration::from_millis(5)).await;
            let slot_at = {
                let tasks = ex.inner.tasks.borrow();
                let (_, slot) = tasks.iter().next().expect("the task waits");
                std::ptr::from_ref(slot) as usize
            };
            // Woken from the main future, not a task: to the queue's back.
            tx.try_send(()).unwrap();
            let queued = *ex.inner.queue.borrow().back().expect("queued");
            assert_eq!(queued.hint_at, 0x5a40);
            assert_eq!(queued.slot_at, slot_at);
            t.await;
        }))
        .unwrap();
    }

    /// A data hint is queued with the task on every wake until the task
    /// says another, not only after the run that gave it.
    #[test]
    fn a_data_hint_holds_until_the_task_changes_it() {
        let ex = LocalExecutor::new();
        let (tx, rx) = async_channel::bounded::<usize>(1);
        block_on(ex.run(async {
            let t = ex.spawn(async move {
                hint_data([0x7000, 0x7100, 0x7200, 0x7300]);
                while let Ok(next) = rx.recv().await {
                    if next != 0 {
                        hint_data([next, 0, 0, next + 0x40]);
                    }
                }
            });
            let mut queued = Vec::new();
            for send in [0, 0, 0x9000, 0] {
                Timer::after(Duration::from_millis(5)).await;
                // Woken from the main future: to the queue's back.
                tx.try_send(send).unwrap();
                queued.push(ex.inner.queue.borrow().back().expect("queued").data_at);
            }
            let before = [0x7000, 0x7100, 0x7200, 0x7300];
            let after = [0x9000, 0, 0, 0x9040];
            assert_eq!(queued, [before, before, before, after]);
            drop(tx);
            t.await;
        }))
        .unwrap();
    }

    #[test]
    fn a_task_waiting_on_a_socket_hints_its_reactor_entry() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let ex = LocalExecutor::new();
        block_on(ex.run(async {
            let server = super::super::Io::new(server).unwrap();
            let t = ex.spawn(async move {
                // Nothing sent yet: `WouldBlock` clears the readiness
                // every socket starts with, so the wait below is real.
                let err = server.try_read(&mut [0u8; 8]).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
                server.readable().await;
            });
            Timer::after(Duration::from_millis(5)).await;
            let hint_at = {
                let tasks = ex.inner.tasks.borrow();
                let (_, slot) = tasks.iter().next().expect("the task waits");
                slot.wake.task().hint_at
            };
            assert_ne!(hint_at, 0, "a task pending on a socket names its entry");
            drop(t);
        }))
        .unwrap();
        drop(client);
    }

    #[test]
    fn a_task_may_drop_other_tasks_and_itself_finish() {
        let ex = Rc::new(LocalExecutor::new());
        let e = ex.clone();
        block_on(ex.run(async {
            let victim = e.spawn(Timer::after(Duration::from_secs(60)));
            let killer = e.spawn(async move {
                drop(victim);
                5
            });
            assert_eq!(killer.await, 5);
        }))
        .unwrap();
        assert_eq!(ex.inner.tasks.borrow().len(), 0);
    }
}
