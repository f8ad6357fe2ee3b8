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
pub mod webhooks;
pub mod work_orders;

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
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Contact log ids taken ahead from PostgreSQL's sequence ([`Store::reserve_call_id`]).
    reserved: std::sync::Arc<calls::ReservedIds>,
}

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
        let (min, max) = match backend {
            Backend::Sqlite => (2, 4),
            Backend::Postgres => (8, 16),
        };
        let mut pool = AnyPoolOptions::new()
            .min_connections(min)
            .max_connections(max);
        if backend == Backend::Sqlite {
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // Per connection: enforce references, wait on a busy writer.
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    // The checkpointer does it, off the call path (store/checkpoint.rs).
                    conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_with(options.clone()).await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            if !url.contains(":memory:") && !url.contains("mode=memory") {
                checkpoint::spawn(pool.clone(), options);
            }
        }
        Ok(Store {
            pool,
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

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Milliseconds since the Unix epoch, the store's time unit (see [`crate::time`]).
pub(crate) use crate::time::now_ms;
