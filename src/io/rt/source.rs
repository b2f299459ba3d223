//! A socket on the thread's reactor: registered once, edge-triggered, with
//! its readiness remembered between reads and writes.

use super::reactor::{Dir, Reactor};
use std::future::poll_fn;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::rc::Rc;

/// A non-blocking socket driven by [`super::block_on`], like smol's `Async`.
#[derive(Debug)]
pub struct Io<T: AsFd> {
    reactor: Rc<Reactor>,
    key: usize,
    inner: T,
}

/// Sockets that can be made non-blocking.
pub trait NonBlocking: AsFd {
    /// Puts the socket in non-blocking mode.
    fn set_nonblocking(&self) -> io::Result<()>;
}

impl NonBlocking for TcpStream {
    fn set_nonblocking(&self) -> io::Result<()> {
        TcpStream::set_nonblocking(self, true)
    }
}

impl NonBlocking for TcpListener {
    fn set_nonblocking(&self) -> io::Result<()> {
        TcpListener::set_nonblocking(self, true)
    }
}

impl<T: NonBlocking> Io<T> {
    /// Makes `inner` non-blocking and registers it with this thread's loop.
    pub fn new(inner: T) -> io::Result<Io<T>> {
        inner.set_nonblocking()?;
        let reactor = Reactor::get()?;
        let key = reactor.register(inner.as_fd())?;
        Ok(Io {
            reactor,
            key,
            inner,
        })
    }
}

impl<T: AsFd> Io<T> {
    /// The socket itself.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Whether the peer has closed its side or the socket failed, as the
    /// loop last heard (`EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`): bytes it sent
    /// before may still be unread.
    pub fn hung_up(&self) -> bool {
        self.reactor.hung_up(self.key)
    }

    /// Waits until the socket may be readable (it may still say
    /// `WouldBlock`; see [`Io::read_with`]).
    pub async fn readable(&self) {
        poll_fn(|cx| self.poll_readable(cx)).await;
    }

    /// [`Io::readable`] as a poll: ready, or pending with `cx`'s waker
    /// kept for the next read edge.
    pub fn poll_readable(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.reactor.poll_ready(self.key, Dir::Read, cx)
    }

    async fn writable(&self) {
        poll_fn(|cx| self.reactor.poll_ready(self.key, Dir::Write, cx)).await;
    }

    /// Runs a non-blocking read `op` until it does not say `WouldBlock`.
    pub async fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.op_with(Dir::Read, op).await
    }

    /// Runs a non-blocking write-side `op` until it does not say
    /// `WouldBlock`, waiting for the next write edge in between (for
    /// example, a non-blocking connect finishing).
    pub async fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.op_with(Dir::Write, op).await
    }

    async fn op_with<R>(&self, dir: Dir, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        loop {
            poll_fn(|cx| self.reactor.poll_ready(self.key, dir, cx)).await;
            match op(&self.inner) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reactor.clear(self.key, dir)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Io<TcpStream> {
    /// Reads what is there into `buf`; 0 at end of stream. A read that
    /// does not fill `buf` emptied the socket, so the next one waits for
    /// the next edge instead of asking the kernel for `WouldBlock`.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|_| self.try_read(buf)).await
    }

    /// One non-blocking read, whatever the known readiness; `WouldBlock`
    /// and short reads clear it (a short one not after urgent data).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match recv(&self.inner, buf) {
            Ok(n) => {
                if n > 0 {
                    // What was read arrived before now: deadlines it sets
                    // count from at least its arrival (see `super::now`).
                    self.reactor.read_clock();
                    if n < buf.len() {
                        self.reactor.clear_after_short_read(self.key);
                    }
                }
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.reactor.clear(self.key, Dir::Read);
                }
                Err(e)
            }
        }
    }

    /// Writes what the send buffer takes now, without waiting; `Ok(0)` when
    /// it takes nothing (full, or the call was interrupted). A write that
    /// leaves the socket full clears the readiness.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match send(&self.inner, buf) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if n < buf.len() {
                    self.reactor.clear(self.key, Dir::Write);
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.reactor.clear(self.key, Dir::Write);
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Writes all of `buf`. A short write means the send buffer is full:
    /// the rest waits for the next edge.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            self.writable().await;
            let n = self.try_write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }
}

/// `recv(2)`, as `Read for &TcpStream` does it, but as a direct system
/// call: glibc's wrapper of a cancellation point (`recv`, `send`) also
/// switches the thread's asynchronous cancellation on and off around it,
/// which perf counted at over 1 % of the server's user time.
fn recv(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::net::recv(socket, buf, rustix::net::RecvFlags::empty())?.0)
}

/// `send(2)` with `MSG_NOSIGNAL` (a closed peer is an error, not a
/// `SIGPIPE`), as `Write for &TcpStream` does it; see [`recv`].
fn send(socket: &impl AsFd, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(
        socket,
        buf,
        rustix::net::SendFlags::NOSIGNAL,
    )?)
}

impl<T: AsFd> Drop for Io<T> {
    fn drop(&mut self) {
        self.reactor.deregister(self.key, self.inner.as_fd());
    }
}
