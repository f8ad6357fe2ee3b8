//! Keeping the recordings' disk in check. Recordings older than their queue's
//! `keep_recordings_days` (or the profile's `[retention] keep_days`) are deleted or moved to
//! the archive folder on a schedule ([`sweep`]); their contact logs stay, marked `expired` or
//! `archived`, and each removal is one audit entry. The disk the recordings live on is watched
//! ([`disk`]): below `low_disk_percent` free, a warning and a metric, well before a full disk
//! (which calls survive anyway: the audio written so far stays playable and the contact log
//! says the recording failed).

pub mod disk;
pub mod sweep;

use std::path::PathBuf;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Retention;
use crate::store::Store;

/// The sweep and the disk watch, for as long as the server runs.
pub fn spawn(store: Store, recordings: PathBuf, cfg: Retention) {
    let watch_every = Duration::from_secs(60);
    let disk_cfg = cfg.clone();
    let root = recordings.clone();
    tokio::spawn(async move {
        let mut watch = disk::DiskWatch::new(disk_cfg.low_disk_percent);
        let mut tick = tokio::time::interval(watch_every);
        loop {
            tick.tick().await;
            let dir = root.clone();
            let Ok(Ok(space)) = tokio::task::spawn_blocking(move || disk::space(&dir)).await else {
                continue;
            };
            disk::publish(&space);
            match watch.observe(&space) {
                Some(disk::Change::Low) => warn!(
                    free_mb = space.free / 1_000_000,
                    total_mb = space.total / 1_000_000,
                    percent_free = format!("{:.1}", space.percent_free()),
                    threshold = disk_cfg.low_disk_percent,
                    dir = %root.display(),
                    "recordings disk low: free space below the threshold"
                ),
                Some(disk::Change::Recovered) => info!(
                    free_mb = space.free / 1_000_000,
                    dir = %root.display(),
                    "recordings disk no longer low"
                ),
                None => {}
            }
        }
    });
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_secs(cfg.check_every_secs.clamp(10, 86_400)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Queues may keep their own days even when the profile keeps for ever: the
            // store's query decides per recording.
            let now = crate::time::now_ms();
            match sweep::sweep(&store, &recordings, &cfg, now, false).await {
                Ok(r) if r.removed.is_empty() && r.failed.is_empty() => {}
                Ok(r) => info!(
                    removed = r.removed.len(),
                    failed = r.failed.len(),
                    "retention: expired recordings removed"
                ),
                Err(e) => warn!(error = %e, "retention sweep failed; tried again later"),
            }
        }
    });
}
