//! The SQLite connections of one store and the only way operations reach them.
//!
//! Owns one writer connection (SQLite admits one writer at a time anyway, so a mutex
//! costs nothing and keeps writers from spinning on SQLITE_BUSY) and a small pool of
//! reader connections that WAL lets run beside the writer.
//! Must never: run SQLite on an async worker thread (every call goes through
//! `spawn_blocking`), or hand a write to a caller outside one `BEGIN IMMEDIATE`
//! transaction that either commits whole or rolls back whole.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::errors::{poisoned, sql, task_failed};
use super::schema;
use crate::store::StoreResult;

/// Readers in the pool: enough for the gateway's workers on a small machine while
/// each holds a page cache of its own.
pub const READERS: usize = 4;

pub struct Connections {
    writer: Mutex<Connection>,
    readers: ReaderPool,
}

impl Connections {
    /// Opens (creating if needed) the database file, sets it up and migrates it, then
    /// opens the readers. Blocking: call from `spawn_blocking`.
    pub fn open(path: &Path) -> StoreResult<Connections> {
        let mut writer = Connection::open(path).map_err(sql)?;
        schema::configure(&writer)?;
        schema::enable_wal(&writer)?;
        schema::migrate(&mut writer)?;
        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            idle.push(open_reader(path)?);
        }
        Ok(Connections {
            writer: Mutex::new(writer),
            readers: ReaderPool {
                idle: Mutex::new(idle),
                returned: Condvar::new(),
            },
        })
    }

    /// Locks the writer connection, outside any transaction.
    pub fn writer(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.writer.lock().map_err(|_| poisoned("writer"))
    }
}

/// Runs `op` in one `BEGIN IMMEDIATE` transaction on the writer, off the async runtime.
/// Commits when `op` returns `Ok`; any error rolls everything back.
pub async fn write<T, F>(conns: &Arc<Connections>, op: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
{
    let conns = Arc::clone(conns);
    tokio::task::spawn_blocking(move || {
        let mut conn = conns.writer()?;
        // A rollback that failed earlier would leave the connection inside a
        // transaction and make every later BEGIN fail; end it first.
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK").map_err(sql)?;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let out = op(&tx)?;
        tx.commit().map_err(sql)?;
        Ok(out)
    })
    .await
    .map_err(task_failed)?
}

/// Runs `op` on a pooled reader connection, off the async runtime. Each statement
/// reads one consistent snapshot of the last committed state.
pub async fn read<T, F>(conns: &Arc<Connections>, op: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    let conns = Arc::clone(conns);
    tokio::task::spawn_blocking(move || {
        let reader = conns.readers.checkout()?;
        op(reader.connection()?)
    })
    .await
    .map_err(task_failed)?
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    // No CREATE flag: the writer made the file; a reader must not make another one.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(sql)?;
    schema::configure(&conn)?;
    // A reader that tried to write would be a bug; make SQLite refuse it.
    conn.pragma_update(None, "query_only", "ON").map_err(sql)?;
    Ok(conn)
}

struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

impl ReaderPool {
    /// Takes an idle reader, waiting for one to be returned when all are busy.
    fn checkout(&self) -> StoreResult<PooledReader<'_>> {
        let mut idle = self.idle.lock().map_err(|_| poisoned("reader pool"))?;
        loop {
            if let Some(conn) = idle.pop() {
                return Ok(PooledReader {
                    pool: self,
                    conn: Some(conn),
                });
            }
            idle = self
                .returned
                .wait(idle)
                .map_err(|_| poisoned("reader pool"))?;
        }
    }
}

/// A reader on loan; goes back to the pool when dropped, even on error or panic.
struct PooledReader<'a> {
    pool: &'a ReaderPool,
    conn: Option<Connection>,
}

impl PooledReader<'_> {
    /// `conn` is only taken in `drop`, so this is always `Ok` while the loan lasts.
    fn connection(&self) -> StoreResult<&Connection> {
        self.conn.as_ref().ok_or_else(|| poisoned("reader"))
    }
}

impl Drop for PooledReader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A poisoned pool is already reported by every later checkout.
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.push(conn);
                self.pool.returned.notify_one();
            }
        }
    }
}
