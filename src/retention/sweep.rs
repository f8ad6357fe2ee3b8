//! One pass over the recordings past their retention at `now` (a parameter: `screenpop
//! recordings expire --dry-run --as-of` lists what a later day's pass will remove), oldest
//! first: each is claimed in the store (one node of several wins it, for an hour), its WAV and
//! call record are deleted or moved to the archive folder, and its recording row, contact log
//! and audit entry are written in one transaction. Only a `.wav` in the recordings directory's
//! own layout is touched; one that is missing or cannot be removed stays as it is and is tried
//! at the next pass, without holding up the others.

use std::io;
use std::path::{Component, Path, PathBuf};

use tracing::{info, warn};

use crate::config::{Retention, RetentionAction};
use crate::store::calls::ExpiringRecording;
use crate::store::{Store, StoreError};

/// Recordings claimed per round trip to the store.
const BATCH: i64 = 200;

/// One recording removed (or, in a dry run, that would be).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removed {
    pub recording_id: i64,
    pub call_id: Option<i64>,
    pub queue: Option<String>,
    /// The retention that applied, in days.
    pub days: i64,
    /// When it was recorded (epoch ms).
    pub created_at: i64,
    pub path: String,
    /// Where it was moved; `None`: deleted.
    pub archived_to: Option<String>,
}

/// What a pass did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub removed: Vec<Removed>,
    /// Recordings whose file could not be removed, with why (tried again next pass).
    pub failed: Vec<(i64, String)>,
}

/// Removes every recording past its retention at `now_ms`; with `dry_run`, only lists them.
pub async fn sweep(
    store: &Store,
    recordings: &Path,
    cfg: &Retention,
    now_ms: i64,
    dry_run: bool,
) -> Result<Report, StoreError> {
    let default_days = i64::from(cfg.keep_days);
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    // Oldest first, a page at a time after the last one seen: one that fails is passed over
    // (and tried at the next pass), never holding up those behind it.
    let mut after = (i64::MIN, i64::MIN);
    loop {
        let batch = store
            .expiring_recordings(now_ms, default_days, after, BATCH)
            .await?;
        let Some(last) = batch.last() else { break };
        after = (last.created_at, last.id);
        for r in batch {
            if dry_run {
                let archived_to = match cfg.action {
                    RetentionAction::Archive => resolve(recordings, &r.path)
                        .map(|(_, rel)| absolute(&cfg.archive_dir).join(rel)),
                    RetentionAction::Delete => None,
                };
                report
                    .removed
                    .push(removed(r, archived_to.map(|p| p.display().to_string())));
                continue;
            }
            let id = r.id;
            if !store.claim_expiry(id).await? {
                continue; // another node has it
            }
            match remove(recordings, cfg, &r.path).await {
                Ok(archived_to) => {
                    let done = removed(r, archived_to.map(|p| p.display().to_string()));
                    let (action, detail) = audit_text(&done);
                    let to = done.archived_to.as_deref();
                    match store.recording_expired(id, to, (action, &detail)).await {
                        Ok(()) => {
                            info!(recording = id, %detail, "retention: {action}");
                            report.removed.push(done);
                        }
                        // The file is gone but the store did not hear it: the claim is kept
                        // (no other node tries for an hour) and the error said loudly.
                        Err(e) => {
                            tracing::error!(recording = id, %detail, error = %e,
                                "retention: removed, but the store was not updated");
                            report.failed.push((id, e.to_string()));
                        }
                    }
                }
                Err(e) => {
                    warn!(recording = id, path = %r.path, error = %e,
                        "retention: the recording could not be removed; tried again later");
                    store.unclaim_expiry(id).await?;
                    report.failed.push((id, e.to_string()));
                }
            }
        }
    }
    Ok(report)
}

fn removed(r: ExpiringRecording, archived_to: Option<String>) -> Removed {
    Removed {
        recording_id: r.id,
        call_id: r.call_id,
        queue: r.queue,
        days: r.days,
        created_at: r.created_at,
        path: r.path,
        archived_to,
    }
}

/// The audit entry of a removal: what, whose call, under which retention.
fn audit_text(r: &Removed) -> (&'static str, String) {
    let (action, what) = match &r.archived_to {
        Some(to) => ("recording.archive", format!("{} moved to {to}", r.path)),
        None => ("recording.expire", format!("{} deleted", r.path)),
    };
    let detail = format!(
        "{what}; call {}; queue {}; kept {} days",
        r.call_id.map_or("-".into(), |c| c.to_string()),
        r.queue.as_deref().unwrap_or("-"),
        r.days
    );
    (action, detail)
}

/// A path as the server opens it (relative: to the working directory).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The recording's WAV under the recordings directory, and its path below it
/// (`YYYY/MM/DD/<id>.wav`). Only a `.wav` file in the recordings directory's own layout is
/// ever touched, whatever the database says: a stored path outside it, with `..`, or of
/// another kind is refused (`None`).
fn resolve(recordings: &Path, stored: &str) -> Option<(PathBuf, PathBuf)> {
    let stored = Path::new(stored);
    if stored.extension().is_none_or(|e| e != "wav") {
        return None;
    }
    // The last four parts (year, month, day, file), all plain names.
    let parts: Vec<&std::ffi::OsStr> = stored
        .components()
        .rev()
        .take(4)
        .map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    if parts.len() != 4 {
        return None;
    }
    let rel: PathBuf = parts.into_iter().rev().collect();
    Some((absolute(recordings).join(&rel), rel))
}

/// Deletes or moves the WAV and its call record (`.json`). A WAV that is not there is an
/// error (the recordings directory may be unmounted, or this node's disk not the one it is
/// on): the recording stays as it is. Returns where the WAV went when archived.
async fn remove(recordings: &Path, cfg: &Retention, stored: &str) -> io::Result<Option<PathBuf>> {
    let (wav, rel) = resolve(recordings, stored).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{stored} is not a recording under {}", recordings.display()),
        )
    })?;
    if !tokio::fs::try_exists(&wav).await? {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is missing", wav.display()),
        ));
    }
    let json = wav.with_extension("json");
    match cfg.action {
        RetentionAction::Delete => {
            tokio::fs::remove_file(&wav).await?;
            match tokio::fs::remove_file(&json).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => warn!(
                    file = %json.display(), error = %e, "retention: call record not deleted"
                ),
                _ => {}
            }
            Ok(None)
        }
        RetentionAction::Archive => {
            let to = absolute(&cfg.archive_dir).join(rel);
            if let Some(dir) = to.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            if tokio::fs::try_exists(&json).await? {
                move_file(&json, &to.with_extension("json")).await?;
            }
            move_file(&wav, &to).await?;
            Ok(Some(to))
        }
    }
}

/// Renames, or, when the archive is on another file system, copies to a temporary name,
/// syncs, renames into place and only then deletes the original: a crash leaves the original
/// whole, never a partial archive under the final name.
async fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match tokio::fs::rename(from, to).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let (from, to) = (from.to_path_buf(), to.to_path_buf());
            tokio::task::spawn_blocking(move || {
                let tmp = to.with_extension("part");
                std::fs::copy(&from, &tmp)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &to)?;
                if let Some(dir) = to.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                std::fs::remove_file(&from)
            })
            .await
            .map_err(io::Error::other)?
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wavs_in_the_recordings_layout_are_touched() {
        let (wav, rel) = resolve(Path::new("/srv/rec"), "/srv/rec/2026/12/03/1-ab.wav").unwrap();
        assert_eq!(wav, PathBuf::from("/srv/rec/2026/12/03/1-ab.wav"));
        assert_eq!(rel, PathBuf::from("2026/12/03/1-ab.wav"));
        // Recorded under a recordings directory since moved (or named relative to another
        // working directory): found in today's.
        let (wav, _) = resolve(Path::new("/srv/rec"), "recordings/2025/01/02/9-cd.wav").unwrap();
        assert_eq!(wav, PathBuf::from("/srv/rec/2025/01/02/9-cd.wav"));
        for bad in [
            "/etc/passwd",
            "/srv/rec/2026/12/03/1-ab.json",
            "/srv/rec/2026/../../etc/x.wav",
            "a.wav",
        ] {
            assert!(resolve(Path::new("/srv/rec"), bad).is_none(), "{bad}");
        }
    }
}
