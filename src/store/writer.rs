//! The calls' writes, committed in batches by one task.
//!
//! SQLite takes one writer at a time, and every statement sent on its own is a commit (its WAL
//! frames written, its locks taken and let go) and a round trip through the pool and sqlx's
//! worker thread. At 400 call set-ups a second, with the machine's two cores busy relaying and
//! recording, those round trips were slower than the calls came: contact-log writes queued for
//! seconds and the callers' lookups with them (issue 13 point 4). On PostgreSQL every commit
//! waits for its WAL to reach the disk, and at 500 set-ups a second the writes, each holding
//! a pool connection through its flush, left none for the callers' cards: 315 set-ups a second
//! with pops seconds late. Here the writes of all calls waiting at a moment go in one
//! transaction, on a connection taken once for the batch, and each write learns its outcome
//! after the COMMIT: a write is only reported done once it is.
//!
//! A write that fails fails alone. SQLite undoes only the failing statement and the batch goes
//! on; PostgreSQL aborts the whole transaction, so there the batch is rolled back and its
//! writes are made again one by one, each in a transaction of its own.

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::StoreError;

/// A write's statements, run inside the batch's transaction (and again on their own should
/// the batch fail on PostgreSQL); what they return is told to the caller once committed.
pub(super) type Work<T> =
    Box<dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send>;

/// A write waiting in the queue, its type erased.
trait Pending: Send {
    /// Runs the write's statements and keeps their outcome; true when they succeeded.
    fn run<'c>(&'c mut self, conn: &'c mut AnyConnection) -> BoxFuture<'c, bool>;
    /// Its outcome is a failure after all: its own COMMIT failed.
    fn fail(&mut self, why: String);
    /// Tells the caller the outcome, given the batch's COMMIT error if there was one.
    fn tell(self: Box<Self>, commit: Option<&str>);
}

struct Write<T> {
    work: Work<T>,
    done: Option<Result<T, StoreError>>,
    caller: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> Pending for Write<T> {
    fn run<'c>(&'c mut self, conn: &'c mut AnyConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let done = (self.work)(conn).await;
            let ok = done.is_ok();
            self.done = Some(done);
            ok
        })
    }

    fn fail(&mut self, why: String) {
        self.done = Some(Err(StoreError::Commit(why)));
    }

    fn tell(self: Box<Self>, commit: Option<&str>) {
        let outcome = match (commit, self.done) {
            (Some(why), _) => Err(StoreError::Commit(why.to_string())),
            (None, Some(done)) => done,
            (None, None) => Err(StoreError::Closed),
        };
        let _ = self.caller.send(outcome);
    }
}

type Job = Box<dyn Pending>;

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
    /// `aborts`: the database aborts a transaction when one of its statements fails
    /// (PostgreSQL).
    pub(super) fn spawn(pool: AnyPool, aborts: bool) -> Writer {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, aborts, rx));
        Writer { jobs }
    }

    /// Runs `work` in the next batch; its result once the batch is committed.
    pub(super) async fn write<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let (caller, rx) = oneshot::channel();
        let job: Job = Box::new(Write {
            work,
            done: None,
            caller,
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: AnyPool, aborts: bool, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let jobs = std::mem::take(&mut batch);
        match commit(&pool, aborts, jobs).await {
            Ok(jobs) => {
                for job in jobs {
                    job.tell(None);
                }
            }
            Err((jobs, e)) => {
                warn!(error = %e, writes = jobs.len(), "a batch of writes was not committed");
                let why = e.to_string();
                for job in jobs {
                    job.tell(Some(&why));
                }
            }
        }
    }
}

/// One transaction for the batch; on a database that aborts it for one failed write, the
/// writes one by one instead.
async fn commit(
    pool: &AnyPool,
    aborts: bool,
    mut batch: Vec<Job>,
) -> Result<Vec<Job>, (Vec<Job>, StoreError)> {
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return Err((batch, e.into())),
    };
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return Err((batch, e.into())),
    };
    let mut failed = false;
    for job in batch.iter_mut() {
        failed |= !job.run(&mut tx).await;
    }
    if failed && aborts {
        // Nothing of the batch stands: each write again, on its own.
        if let Err(e) = tx.rollback().await {
            return Err((batch, e.into()));
        }
        for job in batch.iter_mut() {
            let mut own = match conn.begin().await {
                Ok(tx) => tx,
                Err(e) => {
                    job.fail(e.to_string());
                    continue;
                }
            };
            if job.run(&mut own).await {
                if let Err(e) = own.commit().await {
                    job.fail(e.to_string());
                }
            } else {
                // Its error is its outcome; a failed ROLLBACK changes nothing of that.
                let _ = own.rollback().await;
            }
        }
        return Ok(batch);
    }
    match tx.commit().await {
        Ok(()) => Ok(batch),
        Err(e) => Err((batch, e.into())),
    }
}
