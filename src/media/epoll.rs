//! A level-triggered epoll set and an eventfd waker for the media engine.
//!
//! Why not mio: mio is edge-triggered, so every readiness must be drained until `EAGAIN`, which
//! costs one failed `recvfrom` per packet when each socket carries one packet per poll (RTP at
//! 20 ms). Level-triggered, the engine reads exactly one packet per event and the kernel reports
//! the socket again if more is queued: one `recvfrom` and one `sendto` per packet.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An epoll instance whose events carry a `u64` token.
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input, level-triggered.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as above; the event argument is ignored for EPOLL_CTL_DEL.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events; returns how many of `events` were filled.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        // Rounded up: a timer due in 0.4 ms must not turn into a busy loop of zero waits.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: the kernel writes at most `max` entries into `events`.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Wakes an [`Epoll`] waiter from another thread.
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        let r = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // A full counter still wakes the waiter.
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Clears the counter after a wake-up.
    pub fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; errors (EAGAIN) are irrelevant here.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_triggered_reports_until_read() {
        let ep = Epoll::new().unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        ep.add(a.as_raw_fd(), 7).unwrap();
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        b.send_to(b"y", a.local_addr().unwrap()).unwrap();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let mut buf = [0u8; 8];
        for _ in 0..2 {
            assert_eq!(ep.wait(&mut evs, Duration::from_secs(1)).unwrap(), 1);
            assert_eq!({ evs[0].u64 }, 7);
            a.recv_from(&mut buf).unwrap();
        }
        assert_eq!(ep.wait(&mut evs, Duration::from_millis(10)).unwrap(), 0);
        let w = EventFd::new().unwrap();
        ep.add(w.raw(), 9).unwrap();
        w.wake().unwrap();
        assert_eq!(ep.wait(&mut evs, Duration::from_secs(1)).unwrap(), 1);
        assert_eq!({ evs[0].u64 }, 9);
        w.reset();
        assert_eq!(ep.wait(&mut evs, Duration::from_millis(10)).unwrap(), 0);
        ep.remove(a.as_raw_fd()).unwrap();
    }
}
