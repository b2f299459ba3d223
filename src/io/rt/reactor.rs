//! The per-thread reactor: one epoll instance, the readiness of every
//! registered socket, and the timers.

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Events taken from the kernel per `epoll_wait`; more wait for the next
/// turn, which comes at once.
const EVENTS_PER_WAIT_MAX: usize = 1024;
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
    /// Deadline and a sequence number (deadlines can be equal) to the task.
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    timer_seq: Cell<u64>,
    events: RefCell<Vec<epoll::Event>>,
    /// Wakers collected during a turn, woken once no borrow is held.
    wake: RefCell<Vec<Waker>>,
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

    fn new() -> io::Result<Reactor> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        // Level-triggered: it stays readable until drained.
        epoll::add(&epoll, &efd, EventData::new_u64(NOTIFY_KEY), EventFlags::IN)?;
        Ok(Reactor {
            epoll,
            notify: Notifier(Arc::new(efd)),
            sources: RefCell::new(Slab::new()),
            timers: RefCell::new(BTreeMap::new()),
            timer_seq: Cell::new(0),
            events: RefCell::new(Vec::with_capacity(EVENTS_PER_WAIT_MAX)),
            wake: RefCell::new(Vec::new()),
        })
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
            EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET,
        )?;
        entry.insert(Source {
            readable: true,
            writable: true,
            hung_up: false,
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
        let (ready, slot) = match dir {
            Dir::Read => (source.readable, &mut source.reader),
            Dir::Write => (source.writable, &mut source.writer),
        };
        if ready {
            return Poll::Ready(());
        }
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

    /// The last read (or write) came back short or `WouldBlock`: wait for
    /// the next edge.
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

    pub(super) fn insert_timer(&self, at: Instant, waker: &Waker) -> u64 {
        let id = self.timer_seq.get();
        self.timer_seq.set(id.wrapping_add(1));
        self.timers.borrow_mut().insert((at, id), waker.clone());
        id
    }

    /// Keeps the newest waker of a registered timer. False when it fired.
    pub(super) fn update_timer(&self, at: Instant, id: u64, waker: &Waker) -> bool {
        match self.timers.borrow_mut().get_mut(&(at, id)) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    pub(super) fn remove_timer(&self, at: Instant, id: u64) {
        self.timers.borrow_mut().remove(&(at, id));
    }

    /// One turn: wait for events (up to the next timer, or not at all when
    /// `block` is false), mark readiness, fire due timers, wake their tasks.
    /// `sleeping` is cleared as soon as the wait returns, so that tasks
    /// woken from here on do not write the eventfd.
    pub(super) fn turn(&self, block: bool, now: Instant, sleeping: &AtomicBool) -> io::Result<()> {
        let timeout = if block {
            self.timers
                .borrow()
                .keys()
                .next()
                .map(|&(at, _)| timespec(at.saturating_duration_since(now)))
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
        {
            let now = Instant::now();
            let mut timers = self.timers.borrow_mut();
            while let Some(entry) = timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                wake.push(entry.remove());
            }
        }
        let mut woken = std::mem::take(&mut *wake);
        drop(wake);
        for w in woken.drain(..) {
            w.wake();
        }
        // Keep the allocation for the next turn.
        *self.wake.borrow_mut() = woken;
        Ok(())
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
            .field("timers", &self.timers.borrow().len())
            .finish_non_exhaustive()
    }
}

impl AsFd for Reactor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}
