//! The store: one implementation over sqlx's Any driver for SQLite (the embedded default, a
//! file in WAL mode) and PostgreSQL (teams and scale-out). The Any driver only carries
//! booleans, integers, floats, text and blobs, so times are Unix epoch milliseconds and every
//! query uses `$N` placeholders, which both databases accept. Each database keeps its own
//! migrations (`migrations/sqlite`, `migrations/postgres`), equal column for column.

pub mod agents;
pub mod calls;
pub mod campaigns;
pub mod card;
mod checkpoint;
mod columns;
pub mod customers;
mod reading;
pub mod webhooks;
pub mod work_orders;
mod writer;

use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Store errors; `Invalid` names the offending field for API errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?}: expected sqlite://FILE or postgres://…")]
    Url(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A batch of writes ([`writer`]) ran but its COMMIT failed: none of it is stored.
    #[error("not committed: {0}")]
    Commit(String),
    /// The batching writer could not take the write (the store is shutting down) or could not
    /// start its batch (logged with the reason).
    #[error("the write was not made: the database writer is unavailable")]
    Closed,
}

#[derive(Clone)]
pub struct Store {
    /// Every write, and the reads nobody routed to `readers`. On SQLite one connection: the
    /// database takes one writer at a time anyway, and two connections writing at once meet
    /// SQLite's busy handler, which sleeps 1 ms and more before it tries again. At 400 call
    /// set-ups a second that sleeping queued the callers' lookups for seconds (issue 13
    /// point 4).
    pool: AnyPool,
    /// The reads on a caller's path (the screen-pop card) and the pages' lists. On SQLite
    /// connections of their own, read-only (`query_only`: a write sent here fails at once
    /// instead of contending with the writer); WAL lets them read while the writer writes. On
    /// PostgreSQL the same pool as `pool`.
    readers: AnyPool,
    /// SQLite: connections kept by tasks of their own for the screen-pop's read ([`reading`]);
    /// none for an in-memory database (another connection would open another database). Kept
    /// connections did not help on PostgreSQL (the same set-up rate within the noise), where
    /// the card reads from the pool.
    card_readers: Option<reading::Readers>,
    /// The task that commits the calls' writes in batches ([`writer`]).
    writer: writer::Writer,
    backend: Backend,
    /// Contact log ids taken ahead ([`Store::reserve_call_id`]).
    reserved: std::sync::Arc<calls::ReservedIds>,
}

/// SQLite's read-only connections in the pool ([`Store::reader`]) and kept for the
/// screen-pop's read ([`reading`]).
const SQLITE_READERS: u32 = 2;
const SQLITE_CARD_READERS: usize = 2;

impl Store {
    /// Connects; a SQLite file is created when missing and put in WAL mode.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = sqlx::any::AnyConnectOptions::from_str(&url)?;
        // Connections are opened up front: the first calls after start-up must not wait for
        // connection set-up (it showed as 200–450 ms screen-pops on the first second of load).
        if backend == Backend::Postgres {
            let pool = AnyPoolOptions::new()
                .min_connections(8)
                .max_connections(16)
                .connect_with(options)
                .await?;
            return Ok(Store {
                readers: pool.clone(),
                card_readers: None,
                writer: writer::Writer::spawn(pool.clone(), true),
                pool,
                backend,
                reserved: Default::default(),
            });
        }
        let pool = sqlite_pool(1, false).connect_with(options.clone()).await?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let (readers, card_readers) = if in_memory {
            // Another connection would open another database.
            (pool.clone(), None)
        } else {
            checkpoint::spawn(pool.clone(), options.clone());
            let readers = sqlite_pool(SQLITE_READERS, true)
                .connect_with(options.clone())
                .await?;
            let card_readers = reading::Readers::open(&options, SQLITE_CARD_READERS).await?;
            (readers, Some(card_readers))
        };
        Ok(Store {
            card_readers,
            writer: writer::Writer::spawn(pool.clone(), false),
            pool,
            readers,
            backend,
            reserved: Default::default(),
        })
    }

    /// Applies the migrations this database has not seen yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool that writes (see [`Store`]).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs a write in the writer's next batch ([`writer`]).
    async fn write<T: Send + 'static>(&self, work: writer::Work<T>) -> Result<T, StoreError> {
        self.writer.write(work).await
    }

    /// Runs a read on a connection kept for the screen-pop ([`reading`]) where there are such,
    /// else on the readers' pool.
    async fn read_card<T: Send + 'static>(&self, work: writer::Work<T>) -> Result<T, StoreError> {
        match &self.card_readers {
            Some(r) => r.read(work).await,
            None => {
                let mut conn = self.readers.acquire().await?;
                work(&mut conn).await
            }
        }
    }

    /// How many connections the screen-pop's read goes over: a warm-up reads on each.
    pub fn card_connections(&self) -> usize {
        match &self.card_readers {
            Some(_) => SQLITE_CARD_READERS,
            None => self.readers.size() as usize,
        }
    }

    /// The pool for reads that should not queue behind writes (see [`Store`]).
    pub fn reader(&self) -> &AnyPool {
        &self.readers
    }
}

/// A SQLite pool of `n` connections opened up front, each set up as the store needs it.
fn sqlite_pool(n: u32, read_only: bool) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .min_connections(n)
        .max_connections(n)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                // Per connection: enforce references, wait on a busy writer (another process:
                // the command-line tools), commit without an fsync (WAL keeps it safe).
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                // The checkpointer does it, off the call path (store/checkpoint.rs).
                conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                if read_only {
                    conn.execute("PRAGMA query_only = ON").await?;
                }
                Ok(())
            })
        })
}

/// Milliseconds since the Unix epoch, the store's time unit (see [`crate::time`]).
pub(crate) use crate::time::now_ms;
