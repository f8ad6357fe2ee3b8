//! SQLite connections kept by tasks of their own for the screen-pop's read.
//!
//! A read through sqlx's pool is more than its statement: the connection is taken from the
//! pool, and given back by a task spawned for it that first pings the connection, another
//! hand-over to its worker thread and back. At 400 set-ups a second on two busy cores those
//! turns, not the 0.3 ms statement, set how many cards a connection could read: the lookups
//! queued for a second and more behind them (issue 13 point 4). Here each connection stays with
//! one task, which takes the next read as soon as it is done with the last.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Executor};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::writer::Work;
use super::StoreError;

type Job = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, ()> + Send>;

/// The handle to the reading tasks; cloned with the store. They end when the last handle is
/// dropped.
#[derive(Clone)]
pub(super) struct Readers {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Readers {
    /// Opens `n` read-only connections, each kept by a task of its own.
    pub(super) async fn open(options: &AnyConnectOptions, n: usize) -> Result<Readers, StoreError> {
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..n {
            let mut conn = options.connect().await?;
            for pragma in [
                "PRAGMA busy_timeout = 5000",
                "PRAGMA wal_autocheckpoint = 0",
                "PRAGMA query_only = ON",
            ] {
                conn.execute(pragma).await?;
            }
            let rx = rx.clone();
            tokio::spawn(async move {
                loop {
                    // One task waits on the queue at a time; the others wait their turn.
                    let job = rx.lock().await.recv().await;
                    let Some(job) = job else { break };
                    job(&mut conn).await;
                }
                let _ = sqlx::Connection::close(conn).await;
            });
        }
        Ok(Readers { jobs })
    }

    /// Runs `work` on the next free connection.
    pub(super) async fn read<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let _ = tx.send(work(conn).await);
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
