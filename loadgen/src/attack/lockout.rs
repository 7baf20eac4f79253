//! The `lockout` attacker: one thread holding `--attackers` silent sockets from the
//! attacker's address, polled with `poll(2)`, each re-opened as soon as the server
//! closes it; and what it did ([`LockoutReport`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::net::start_connect;
use super::ATTACKER_ADDR;

/// What the lockout attacker did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockoutReport {
    /// Sockets opened (connect started).
    pub opened: u64,
    /// Closed by the server (EOF or reset), each re-opened.
    pub closed_by_server: u64,
    /// Bytes the server sent the silent sockets (a refusal needs the peer to speak).
    pub bytes_received: u64,
    /// Sockets that could not be opened, by error.
    pub open_errors: BTreeMap<String, u64>,
    /// Sockets open at the end.
    pub open_at_end: usize,
}

/// Holds `n` silent sockets from [`ATTACKER_ADDR`], re-opening each the server closes,
/// until `stop`.
pub(super) fn lockout(to: SocketAddr, n: usize, stop: &AtomicBool) -> LockoutReport {
    let mut r = LockoutReport::default();
    let mut socks: Vec<Option<OwnedFd>> = (0..n).map(|_| None).collect();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(n);
    let mut which: Vec<usize> = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Acquire) {
        let mut errors = false;
        for slot in socks.iter_mut().filter(|s| s.is_none()) {
            match start_connect(ATTACKER_ADDR, to) {
                Ok(fd) => {
                    r.opened += 1;
                    *slot = Some(fd);
                }
                Err(e) => {
                    errors = true;
                    *r.open_errors.entry(e.to_string()).or_default() += 1;
                    break;
                }
            }
        }
        fds.clear();
        which.clear();
        for (i, s) in socks.iter().enumerate() {
            if let Some(fd) = s {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(i);
            }
        }
        let wait = if errors { 5 } else { 50 };
        // SAFETY: `fds` is a live array of `fds.len()` pollfds for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if ready <= 0 {
            continue;
        }
        for (p, &i) in fds.iter().zip(&which) {
            if p.revents == 0 {
                continue;
            }
            let Some(fd) = &socks[i] else { continue };
            // SAFETY: reads into `buf` from a descriptor `socks[i]` owns.
            let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got > 0 {
                r.bytes_received += got as u64;
                continue;
            }
            if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            // EOF, a reset or a failed connect: gone; re-opened on the next round.
            r.closed_by_server += 1;
            socks[i] = None;
        }
    }
    r.open_at_end = socks.iter().filter(|s| s.is_some()).count();
    r
}
