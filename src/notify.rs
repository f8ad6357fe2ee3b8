//! systemd's readiness protocol (sd_notify(3)): with `Type=notify`, systemd starts the units
//! that need screenpop once it says `READY=1` (its sockets bound, its store migrated), and
//! shows `STATUS=` lines in `systemctl status`. Outside systemd (no `NOTIFY_SOCKET`) nothing is
//! sent. Written here rather than taken from a crate: it is one datagram.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1\nSTATUS=serving`) to the service manager, if there is one.
/// Failures are logged, never fatal: screenpop serves the same either way.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = send(&path, state) {
            tracing::warn!(error = %e, "systemd notification not sent");
        }
    }
}

/// Sends one notification to the socket at `path` (a file, or `@name` in the abstract
/// namespace).
pub fn send(path: &OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match path.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), std::path::Path::new(path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reaches_a_file_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("screenpop-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), "READY=1\nSTATUS=serving").expect("send");
        let mut buf = [0u8; 256];
        let n = manager.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("screenpop-notify-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let manager = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        let n = manager.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
