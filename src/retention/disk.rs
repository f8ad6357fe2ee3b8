//! The recordings' disk: how much is free ([`space`], statvfs), published as metrics, and
//! [`DiskWatch`], the sans-IO rule that says when it became low and when it recovered (one
//! warning per episode, not one a minute).

use std::io;
use std::path::Path;

/// Free and total bytes of a file system, as an unprivileged process may use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub free: u64,
    pub total: u64,
}

impl Space {
    pub fn percent_free(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        self.free as f64 * 100.0 / self.total as f64
    }
}

/// The space of the file system `dir` is on.
pub fn space(dir: &Path) -> io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: statvfs(3) writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok(Space {
        free: (st.f_bavail as u64).saturating_mul(unit),
        total: (st.f_blocks as u64).saturating_mul(unit),
    })
}

/// `screenpop_recordings_disk_free_bytes` and `screenpop_recordings_disk_total_bytes`.
pub fn publish(s: &Space) {
    metrics::gauge!("screenpop_recordings_disk_free_bytes").set(s.free as f64);
    metrics::gauge!("screenpop_recordings_disk_total_bytes").set(s.total as f64);
}

/// What changed at an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Free space fell under the threshold.
    Low,
    /// It is a point above the threshold again.
    Recovered,
}

/// Low below `threshold` percent free; recovered only a point above it, so a disk hovering
/// at the threshold does not warn on every reading.
#[derive(Debug)]
pub struct DiskWatch {
    threshold: u8,
    low: bool,
}

impl DiskWatch {
    /// `threshold` 0: never low.
    pub fn new(threshold: u8) -> DiskWatch {
        DiskWatch {
            threshold: threshold.min(100),
            low: false,
        }
    }

    pub fn is_low(&self) -> bool {
        self.low
    }

    pub fn observe(&mut self, s: &Space) -> Option<Change> {
        let change = self.judge(s.percent_free());
        metrics::gauge!("screenpop_recordings_disk_low").set(if self.low { 1.0 } else { 0.0 });
        change
    }

    fn judge(&mut self, percent_free: f64) -> Option<Change> {
        if self.threshold == 0 {
            return None;
        }
        let threshold = f64::from(self.threshold);
        if !self.low && percent_free < threshold {
            self.low = true;
            return Some(Change::Low);
        }
        if self.low && percent_free >= threshold + 1.0 {
            self.low = false;
            return Some(Change::Recovered);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(free: u64) -> Space {
        Space { free, total: 1000 }
    }

    #[test]
    fn low_once_then_recovered_a_point_above() {
        let mut w = DiskWatch::new(10);
        assert_eq!(w.observe(&at(500)), None);
        assert_eq!(w.observe(&at(99)), Some(Change::Low));
        assert!(w.is_low());
        assert_eq!(w.observe(&at(50)), None, "one warning per episode");
        assert_eq!(w.observe(&at(100)), None, "at the threshold: still low");
        assert_eq!(w.observe(&at(105)), None);
        assert_eq!(w.observe(&at(110)), Some(Change::Recovered));
        assert!(!w.is_low());
        assert_eq!(w.observe(&at(99)), Some(Change::Low), "a new episode");
    }

    #[test]
    fn zero_turns_the_watch_off() {
        let mut w = DiskWatch::new(0);
        assert_eq!(w.observe(&at(0)), None);
        assert!(!w.is_low());
    }

    #[test]
    fn the_space_of_a_real_directory_is_read() {
        let s = space(&std::env::temp_dir()).expect("statvfs");
        assert!(s.total > 0 && s.free <= s.total, "{s:?}");
        assert!(space(Path::new("/no/such/dir")).is_err());
    }
}
