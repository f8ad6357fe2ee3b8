//! The RTP port pool. Each call leg takes an even RTP port and the odd RTCP port above it
//! (RFC 3550 §11); a lease gives them back when dropped, so every way a call can end — normal
//! hang-up, error, panic in the call task — returns its ports.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// A shared pool of even RTP ports.
#[derive(Debug)]
pub(crate) struct PortPool {
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    pub fn new(low: u16, high: u16) -> Arc<PortPool> {
        let start = low + (low % 2);
        let free: VecDeque<u16> = (start..high).step_by(2).collect();
        Arc::new(PortPool {
            free: Mutex::new(free),
        })
    }

    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Binds an RTP/RTCP socket pair on `ip`, skipping ports another process holds.
    /// `None` means the pool is exhausted (the caller answers 503).
    pub fn bind(self: &Arc<Self>, ip: IpAddr) -> Option<LegSockets> {
        let attempts = self.available();
        for _ in 0..attempts {
            let port = self.free.lock().ok()?.pop_front()?;
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, port));
            let rtcp = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    let lease = PortLease {
                        pool: self.clone(),
                        port,
                    };
                    match (prepare(rtp), prepare(rtcp)) {
                        (Ok(rtp), Ok(rtcp)) => return Some(LegSockets { rtp, rtcp, lease }),
                        _ => continue, // lease drops and returns the port
                    }
                }
                _ => {
                    // In use elsewhere: put it at the back and try the next one.
                    if let Ok(mut f) = self.free.lock() {
                        f.push_back(port);
                    }
                }
            }
        }
        None
    }
}

/// Non-blocking, with room for a burst: the media engine polls these with epoll.
fn prepare(s: std::net::UdpSocket) -> std::io::Result<std::net::UdpSocket> {
    s.set_nonblocking(true)?;
    let sock = socket2::SockRef::from(&s);
    let _ = sock.set_recv_buffer_size(256 << 10);
    Ok(s)
}

/// Holds a port pair; returns it to the pool on drop.
#[derive(Debug)]
pub(crate) struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut f) = self.pool.free.lock() {
            f.push_back(self.port);
        }
    }
}

/// The sockets of one call leg.
#[derive(Debug)]
pub(crate) struct LegSockets {
    pub rtp: std::net::UdpSocket,
    pub rtcp: std::net::UdpSocket,
    pub lease: PortLease,
}

impl LegSockets {
    pub fn port(&self) -> u16 {
        self.lease.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_return_ports() {
        let pool = PortPool::new(41000, 41006);
        assert_eq!(pool.available(), 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = pool.bind(ip).unwrap();
        let b = pool.bind(ip).unwrap();
        let c = pool.bind(ip).unwrap();
        assert_eq!(a.port() % 2, 0);
        assert!(pool.bind(ip).is_none(), "exhausted");
        drop(b);
        assert_eq!(pool.available(), 1);
        let d = pool.bind(ip).unwrap();
        drop((a, c, d));
        assert_eq!(pool.available(), 3);
    }
}
