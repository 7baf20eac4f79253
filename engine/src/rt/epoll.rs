//! Read readiness of the glommio backend's sockets through one epoll instance per
//! thread.
//!
//! glommio waits for a readable socket with a one-shot io_uring poll, armed again for
//! every wait: a request-response connection pays a poll submission and its
//! completion (task work in the kernel) per request. Here each socket is registered
//! once, edge-triggered, with its thread's epoll instance, and the thread's ring
//! waits on that one descriptor instead: a single io_uring poll for all of the
//! thread's sockets, armed again once per wake, however many sockets it reports.
//!
//! A reactor task per thread (started on first use) waits for the epoll descriptor to
//! become readable, collects the ready sockets with a non-blocking `epoll_wait` and
//! wakes the tasks reading them. A stream keeps a [`Readiness`]: its slot in the
//! thread's table (waker and ready flag), deregistered when the stream is dropped or
//! leaves the thread.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Most events one `epoll_wait` collects: the array lives on the thread's stack for
/// that call (3 KiB on x86-64), not in the reactor task. A wake reporting more is
/// collected in several calls, letting other tasks run in between when the time slice
/// is used up.
const MAX_EVENTS: usize = 256;

/// Events a stream is registered for: readable, the peer's half-close, hang-up (error
/// is always reported), edge-triggered so a socket is reported once per arrival, not
/// on every `epoll_wait` while it holds unread bytes.
const INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Events that report the peer's end or a hang-up: from then on reads never wait.
const CLOSED: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32;

/// One registered socket's state.
#[derive(Default)]
struct Slot {
    /// The task waiting to read, woken (and taken) when the socket is reported.
    waker: Option<Waker>,
    /// Whether the socket may have bytes (or an end or error) to read: set when epoll
    /// reports it, cleared when a read found it empty or emptied it.
    ready: bool,
    /// Whether epoll reported the peer's end (or a hang-up): never cleared, so every
    /// read goes to the socket. A read that empties the socket does not report an
    /// end that arrived with the bytes (the next one does), and the end's report may
    /// already have been collected: clearing `ready` alone would then wait forever.
    closed: bool,
}

/// The thread's epoll instance and the slots of the sockets registered with it,
/// indexed by the token registered as each socket's epoll data.
struct Poller {
    epfd: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    /// Slots of deregistered sockets, reused before the table grows.
    free: RefCell<Vec<usize>>,
    /// Whether the reactor task is alive (cleared when it is dropped, with its
    /// executor), so the next wait starts one.
    reactor_running: Cell<bool>,
    /// The running reactor task, for [`stop_reactor`] to wait for.
    reactor: RefCell<Option<super::exec::Task<()>>>,
    /// An eventfd registered with the epoll instance under [`STOP_TOKEN`]: written by
    /// [`stop_reactor`] to wake the reactor and end it before its executor ends (an
    /// executor that ends with the reactor still waiting would keep it, its poll and
    /// the poller's descriptors).
    stop: OwnedFd,
    /// Set when the reactor saw the stop.
    stopping: Cell<bool>,
}

/// The epoll data under which the stop eventfd is registered: never a slot's token.
const STOP_TOKEN: u64 = u64::MAX;

thread_local! {
    /// The calling thread's poller, created on first use. Streams and the reactor task
    /// hold it too, so it outlives the thread-local at the thread's end.
    static POLLER: RefCell<Option<Rc<Poller>>> = const { RefCell::new(None) };
}

impl Poller {
    /// The calling thread's poller.
    fn current() -> io::Result<Rc<Poller>> {
        POLLER.with_borrow_mut(|p| {
            if let Some(p) = p {
                return Ok(p.clone());
            }
            // SAFETY: plain system call; the result is checked before use.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just opened and is owned by nothing else.
            let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: plain system call; the result is checked before use.
            let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `efd` was just opened and is owned by nothing else.
            let stop = unsafe { OwnedFd::from_raw_fd(efd) };
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: STOP_TOKEN,
            };
            // SAFETY: `ev` is a valid event for the duration of the call; both
            // descriptors are open.
            let r = unsafe {
                libc::epoll_ctl(
                    epfd.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    stop.as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let poller = Rc::new(Poller {
                epfd,
                slots: RefCell::new(Vec::new()),
                free: RefCell::new(Vec::new()),
                reactor_running: Cell::new(false),
                reactor: RefCell::new(None),
                stop,
                stopping: Cell::new(false),
            });
            *p = Some(poller.clone());
            Ok(poller)
        })
    }

    /// Registers `fd` and returns its token. The registration reports the socket's
    /// current state too, so bytes that arrived before it are not missed.
    fn register(&self, fd: RawFd) -> io::Result<usize> {
        let token = match self.free.borrow_mut().pop() {
            Some(t) => t,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot::default());
                slots.len() - 1
            }
        };
        let mut ev = libc::epoll_event {
            events: INTEREST,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            let e = io::Error::last_os_error();
            self.free.borrow_mut().push(token);
            return Err(e);
        }
        Ok(token)
    }

    /// Removes `fd` (registered as `token`) and frees its slot. `fd` must still be
    /// open: closing it first would leave a duplicate's registration behind, or remove
    /// that of another socket given the same number.
    fn deregister(&self, fd: RawFd, token: usize) {
        // SAFETY: plain system call on descriptors the caller keeps open.
        let r = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            tracing::trace!("epoll_ctl(DEL): {}", io::Error::last_os_error());
        }
        // Dropped after the borrow ends: the last reference to a task may go with it.
        let old = std::mem::take(&mut self.slots.borrow_mut()[token]);
        self.free.borrow_mut().push(token);
        drop(old);
    }

    /// Starts the thread's reactor task unless it runs.
    fn ensure_reactor(self: &Rc<Self>) {
        if !self.reactor_running.get() {
            self.reactor_running.set(true);
            self.stopping.set(false);
            let task = super::exec::spawn_task(reactor(Running(self.clone())));
            *self.reactor.borrow_mut() = Some(task);
        }
    }

    /// Collects the ready sockets without blocking and wakes their readers; returns
    /// how many were reported.
    fn dispatch(&self) -> usize {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        let n = loop {
            // SAFETY: `events` holds `MAX_EVENTS` writable entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    MAX_EVENTS as libc::c_int,
                    0,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("epoll_wait: {e}");
                break 0;
            }
        };
        for ev in &events[..n] {
            if ev.u64 == STOP_TOKEN {
                // Emptied, so a reactor started later on this thread waits again.
                let mut count = 0u64;
                // SAFETY: reads 8 bytes into a live local from the open eventfd.
                let _ = unsafe {
                    libc::read(
                        self.stop.as_raw_fd(),
                        std::ptr::addr_of_mut!(count).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                self.stopping.set(true);
                continue;
            }
            let token = ev.u64 as usize;
            let waker = match self.slots.borrow_mut().get_mut(token) {
                Some(slot) => {
                    slot.ready = true;
                    if ev.events & CLOSED != 0 {
                        slot.closed = true;
                    }
                    slot.waker.take()
                }
                None => None,
            };
            // Woken outside the borrow.
            if let Some(w) = waker {
                w.wake();
            }
        }
        n
    }
}

/// The reactor task's hold on its poller: marks the reactor stopped when the task is
/// dropped (its executor ended, perhaps before it ever ran), so a later executor on
/// the same thread starts its own.
struct Running(Rc<Poller>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.reactor_running.set(false);
    }
}

/// The reactor task of a thread: waits (through glommio's ring, one poll at a time)
/// for the epoll descriptor to report ready sockets, and wakes their readers.
async fn reactor(running: Running) {
    let poller = &running.0;
    loop {
        if let Err(e) = glommio::net::wait_readable(poller.epfd.as_raw_fd()).await {
            tracing::warn!("waiting on the epoll descriptor: {e}");
            super::exec::sleep(Duration::from_millis(1)).await;
        }
        // Fewer than a full batch means the ready list was emptied; anything reported
        // since makes the descriptor readable for the next wait.
        while poller.dispatch() == MAX_EVENTS {
            super::exec::yield_if_needed().await;
        }
        if poller.stopping.get() {
            return;
        }
    }
}

/// Creates the calling thread's poller now rather than at its first wait (see
/// `rt::glommio::start`).
pub(crate) fn prepare_thread() -> io::Result<()> {
    Poller::current().map(drop)
}

/// Ends the calling thread's reactor task, if it runs, and waits for it: run by each
/// glommio thread after its main future, before its executor ends. Readers still
/// waiting are woken by nothing after this (their executor is ending too).
pub(crate) async fn stop_reactor() {
    let Some(poller) = POLLER.with_borrow(|p| p.clone()) else {
        return;
    };
    let Some(task) = poller.reactor.borrow_mut().take() else {
        return;
    };
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local to the poller's open eventfd.
    let r = unsafe {
        libc::write(
            poller.stop.as_raw_fd(),
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if r < 0 {
        tracing::warn!("stopping the epoll reactor: {}", io::Error::last_os_error());
        return;
    }
    drop(poller);
    task.await;
}

/// A stream's registration with its thread's epoll instance, made at its first wait.
/// Must be dropped before the stream's descriptor is closed (it removes the
/// descriptor from the epoll instance).
#[derive(Default)]
pub(crate) struct Readiness(Option<Registration>);

struct Registration {
    poller: Rc<Poller>,
    token: usize,
    fd: RawFd,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.poller.deregister(self.fd, self.token);
    }
}

/// `recv` without blocking; `None` when the socket has nothing.
fn try_recv(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    loop {
        let e = match super::sys::recv(fd, buf, libc::MSG_DONTWAIT) {
            Ok(n) => return Some(Ok(n)),
            Err(e) => e,
        };
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(e)),
        }
    }
}

impl Readiness {
    /// Reads from `fd` (the stream's descriptor) into `buf` if it has bytes, an end or
    /// an error, else registers `cx` to be woken when it does. A socket known to be
    /// empty (nothing reported since a read found it empty or emptied it, and no end
    /// reported) is not read: that saves the `recv` that would only say `EAGAIN`.
    pub(crate) fn poll_read(
        &mut self,
        fd: RawFd,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(reg) = &self.0 {
            let empty = {
                let slot = &reg.poller.slots.borrow()[reg.token];
                !slot.ready && !slot.closed
            };
            if empty {
                return self.wait(cx);
            }
        }
        match try_recv(fd, buf) {
            Some(Ok(n)) => {
                // A read that did not fill `buf` emptied the socket (edge-triggered:
                // the next arrival is reported); a full one may have left more.
                if n > 0 && n < buf.len() {
                    self.set_ready(false);
                }
                Poll::Ready(Ok(n))
            }
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => {
                if self.0.is_none() {
                    // Registering reports what arrived since the read just made.
                    match Poller::current().and_then(|p| Ok((p.register(fd)?, p))) {
                        Ok((token, poller)) => {
                            self.0 = Some(Registration { poller, token, fd });
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                self.set_ready(false);
                self.wait(cx)
            }
        }
    }

    /// Marks the registered socket empty (or possibly not).
    fn set_ready(&self, ready: bool) {
        if let Some(reg) = &self.0 {
            reg.poller.slots.borrow_mut()[reg.token].ready = ready;
        }
    }

    /// Stores `cx`'s waker for the next report of the registered socket.
    fn wait(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(reg) = &self.0 else {
            return Poll::Ready(Err(io::Error::other("waiting on an unregistered socket")));
        };
        let old = {
            let mut slots = reg.poller.slots.borrow_mut();
            let slot = &mut slots[reg.token];
            match &slot.waker {
                Some(w) if w.will_wake(cx.waker()) => None,
                _ => slot.waker.replace(cx.waker().clone()),
            }
        };
        // Dropped after the borrow ends: the last reference to a task may go with it.
        drop(old);
        reg.poller.ensure_reactor();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    //! Reads through the thread's epoll instance on real loopback sockets: arrival,
    //! end, waits abandoned, descriptors reused, streams handed to another thread.

    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::rt::net::{Listener, SharedStream};
    use crate::rt::Backend;

    /// Runs `make`'s future on a fresh glommio thread; `None` where this machine cannot
    /// run glommio (no io_uring).
    fn on_glommio<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        make: impl FnOnce() -> F + Send + 'static,
    ) -> Option<T> {
        if let Err(e) = crate::rt::choose(Backend::Glommio.runtime(), 1) {
            eprintln!("skipped: {e}");
            return None;
        }
        Some(crate::rt::testing::on(Backend::Glommio, "epoll-test", make))
    }

    /// A listener on the current thread and its address.
    fn listen() -> (Listener, std::net::SocketAddr) {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        (Listener::from_fd(std_listener.into()).unwrap(), addr)
    }

    /// Reads once, giving up (dropping the read) after `d`.
    async fn read_within(stream: &SharedStream, buf: &mut [u8], d: Duration) -> Option<usize> {
        futures_lite::future::or(async { Some(stream.read(buf).await.unwrap()) }, async {
            crate::rt::exec::sleep(d).await;
            None
        })
        .await
    }

    #[test]
    fn reads_what_arrives_in_order_then_the_end() {
        let got = on_glommio(|| async {
            let (listener, addr) = listen();
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let stream = listener.accept().await.unwrap();
            // Arrives while the reader waits: a short message, then more than one read
            // takes, then the end.
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                peer.write_all(b"hello").unwrap();
                std::thread::sleep(Duration::from_millis(50));
                let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
                peer.write_all(&big).unwrap();
            });
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            writer.join().unwrap();
            got
        });
        if let Some(got) = got {
            let mut expect = b"hello".to_vec();
            expect.extend((0..200_000u32).map(|i| i as u8));
            assert_eq!(got.len(), expect.len());
            assert!(got == expect, "bytes out of order");
        }
    }

    #[test]
    fn abandoned_waits_and_reused_descriptors_stay_apart() {
        on_glommio(|| async {
            let (listener, addr) = listen();
            // Streams that wait, give up and close: their descriptors and slots go to
            // the next ones, which still read what is theirs.
            for i in 0..50u8 {
                let mut peer = std::net::TcpStream::connect(addr).unwrap();
                let stream = listener.accept().await.unwrap();
                let mut buf = [0u8; 16];
                assert_eq!(
                    read_within(&stream, &mut buf, Duration::from_millis(2)).await,
                    None
                );
                peer.write_all(&[i]).unwrap();
                let n = read_within(&stream, &mut buf, Duration::from_secs(5)).await;
                assert_eq!((n, buf[0]), (Some(1), i));
                assert_eq!(
                    read_within(&stream, &mut buf, Duration::from_millis(2)).await,
                    None
                );
                drop(stream);
                drop(peer);
            }
            let poller = Poller::current().unwrap();
            assert!(poller.slots.borrow().len() <= 2, "slots are reused");
            assert_eq!(poller.free.borrow().len(), poller.slots.borrow().len());
        });
    }

    #[test]
    fn a_stream_handed_to_another_thread_leaves_this_one() {
        let moved = on_glommio(|| async {
            let (listener, addr) = listen();
            let peer = std::net::TcpStream::connect(addr).unwrap();
            let stream = listener.accept().await.unwrap();
            let mut buf = [0u8; 16];
            // Registered here by a wait that gave up.
            assert_eq!(
                read_within(&stream, &mut buf, Duration::from_millis(2)).await,
                None
            );
            let std = stream.into_std().map_err(|(_, e)| e).unwrap();
            let poller = Poller::current().unwrap();
            assert_eq!(poller.free.borrow().len(), 1, "deregistered on leaving");
            (std, peer)
        });
        let Some((std, mut peer)) = moved else { return };
        let got = on_glommio(move || async move {
            let stream = SharedStream::from_std(std).unwrap();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                peer.write_all(b"moved").unwrap();
                peer.shutdown(std::net::Shutdown::Write).unwrap();
                peer
            });
            let mut buf = [0u8; 16];
            let n = stream.read(&mut buf).await.unwrap();
            let end = stream.read(&mut buf[n..]).await.unwrap();
            drop(writer.join().unwrap());
            (buf[..n].to_vec(), end)
        });
        assert_eq!(got, Some((b"moved".to_vec(), 0)));
    }

    #[test]
    fn a_local_shutdown_wakes_a_waiting_read() {
        on_glommio(|| async {
            let (listener, addr) = listen();
            let _peer = std::net::TcpStream::connect(addr).unwrap();
            let stream = listener.accept().await.unwrap();
            let closer = stream.clone();
            crate::rt::exec::spawn(async move {
                crate::rt::exec::sleep(Duration::from_millis(20)).await;
                closer.shutdown_both();
            });
            let mut buf = [0u8; 16];
            let n = read_within(&stream, &mut buf, Duration::from_secs(5)).await;
            assert_eq!(n, Some(0), "woken by the shutdown, at the end");
        });
    }
}
