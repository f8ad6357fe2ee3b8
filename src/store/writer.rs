//! SQLite's call-path writes, committed in batches by one task.
//!
//! SQLite takes one writer at a time, and every statement sent on its own is a commit (its WAL
//! frames written, its locks taken and let go) and a round trip through the pool and sqlx's
//! worker thread. At 400 call set-ups a second, with the machine's two cores busy relaying and
//! recording, those round trips were slower than the calls came: contact-log writes queued for
//! seconds and the callers' lookups with them (issue 13 point 4). Here the writes of all calls
//! waiting at a moment go in one transaction, on a connection taken once for the batch. Each
//! write learns its outcome after the COMMIT: a write is only reported done once it is.
//!
//! PostgreSQL takes writers side by side and gains nothing from this: there the same writes
//! run on a pool connection of their own ([`super::Store::write`]).

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::StoreError;

/// A write's statements, run inside the batch's transaction; what it returns is told to its
/// caller once the batch is committed (or why the COMMIT failed).
pub(super) type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send>;

/// Tells a write's caller its outcome, given the batch's COMMIT error if there was one.
type Tell = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Tell> + Send>;

/// The most writes in one transaction: a bound on how long the connection is kept from the
/// rest of the store (the pages' writes, campaigns) by one batch.
const BATCH: usize = 128;

/// The handle to the batching task; cloned with the store.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the task on the current runtime; it ends when the last handle is dropped.
    pub(super) fn spawn(pool: AnyPool) -> Writer {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Writer { jobs }
    }

    /// Runs `work` in the next batch; its result once the batch is committed.
    pub(super) async fn write<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let done = work(conn).await;
                Box::new(move |commit: Option<&str>| {
                    let _ = tx.send(match commit {
                        None => done,
                        Some(why) => Err(StoreError::Commit(why.to_string())),
                    });
                }) as Tell
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let tells = match commit(&pool, std::mem::take(&mut batch)).await {
            Ok(tells) => tells.into_iter().map(|t| (t, None)).collect::<Vec<_>>(),
            Err((tells, e)) => {
                warn!(error = %e, "a batch of writes was not committed");
                let why = e.to_string();
                tells.into_iter().map(|t| (t, Some(why.clone()))).collect()
            }
        };
        for (tell, why) in tells {
            tell(why.as_deref());
        }
    }
}

/// One transaction for the batch. The statements of one write failing (a constraint) leave the
/// others: SQLite undoes only the statement.
async fn commit(pool: &AnyPool, batch: Vec<Job>) -> Result<Vec<Tell>, (Vec<Tell>, StoreError)> {
    // Nothing ran: dropping the writes tells each of them so (StoreError::Closed), and the
    // reason is logged once by the caller of this.
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return Err((Vec::new(), e.into())),
    };
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return Err((Vec::new(), e.into())),
    };
    let mut tells = Vec::with_capacity(batch.len());
    for job in batch {
        tells.push(job(&mut tx).await);
    }
    match tx.commit().await {
        Ok(()) => Ok(tells),
        Err(e) => Err((tells, e.into())),
    }
}
