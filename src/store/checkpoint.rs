//! SQLite's WAL, checkpointed off the call path.
//!
//! Left to SQLite, the commit that takes the WAL past 1,000 pages runs the checkpoint, with its
//! fsync of the database file, before it returns. Under load that commit was often a caller's
//! contact-log INSERT, and the caller's screen-pop waited behind it: 20 to 60 ms pops at 25
//! calls a second (issue 13 point 4). The pool's connections therefore never checkpoint
//! (`wal_autocheckpoint = 0`) and this task does it once a second on a connection of its own.
//! A PASSIVE checkpoint takes no lock writers or readers wait for.

use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::AnyPool;
use sqlx::{Connection, Row};
use tracing::{debug, warn};

/// How often the WAL is copied back into the database file.
const EVERY: Duration = Duration::from_secs(1);

/// WAL pages (4 kB) left behind that are worth a warning: something holds a read open for
/// minutes and the file keeps growing.
const WAL_WARN_PAGES: i64 = 250_000;

/// Runs until the pool is closed. Without a runtime (a tool that only migrates), nothing runs
/// and SQLite checkpoints when the last connection closes.
pub(super) fn spawn(pool: AnyPool, options: AnyConnectOptions) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        // A connection of its own, so the pool's stay free for calls; the pool's if none.
        let mut own = match sqlx::AnyConnection::connect_with(&options).await {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(error = %e, "the WAL checkpointer checkpoints on the pool's connections");
                None
            }
        };
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !pool.is_closed() {
            tick.tick().await;
            let checkpoint = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)");
            let done = match own.as_mut() {
                Some(conn) => checkpoint.fetch_one(conn).await,
                None => checkpoint.fetch_one(&pool).await,
            };
            match done {
                Ok(row) => {
                    let log: i64 = row.try_get(1).unwrap_or(0);
                    let done: i64 = row.try_get(2).unwrap_or(0);
                    if log - done > WAL_WARN_PAGES {
                        warn!(
                            wal_pages = log,
                            checkpointed = done,
                            "the WAL cannot be checkpointed: a long read holds it"
                        );
                    } else if log > 0 {
                        debug!(wal_pages = log, checkpointed = done, "WAL checkpointed");
                    }
                }
                Err(e) => warn!(error = %e, "WAL checkpoint failed"),
            }
        }
        if let Some(conn) = own {
            let _ = conn.close().await;
        }
    });
}
