//! The SQLite connections of one store and the only way operations reach them.
//!
//! Owns one writer connection (SQLite admits one writer at a time anyway) driven by a
//! committer thread, and a small pool of reader connections that WAL lets run beside
//! the writer.
//!
//! Group commit: writes queue for the committer, which takes every write waiting when
//! it is free, runs each in a savepoint of ONE `BEGIN IMMEDIATE` transaction and
//! commits once, so a single fsync makes the whole batch durable. Each write sees the
//! earlier writes of its batch, exactly as if they had committed one by one before it;
//! one that fails rolls back to its savepoint alone. Nobody hears of a write before its
//! batch's COMMIT has returned; if the COMMIT fails, every write of the batch fails.
//! Must never: run SQLite on an async worker thread (reads go through `spawn_blocking`,
//! writes through the committer thread), or answer a write before its commit.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::errors::{poisoned, sql, task_failed};
use super::schema;
use crate::store::{StoreError, StoreResult};

/// Readers in the pool: enough for the gateway's workers on a small machine while
/// each holds a page cache of its own.
pub const READERS: usize = 4;

/// Most writes one commit carries: bounds how long the first of them waits.
const MAX_BATCH: usize = 256;

/// Tells a queued write how its batch ended: `Ok` once committed, or why not.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What the committer asks of a queued write.
enum Step<'a> {
    /// Run inside the batch's transaction.
    Run(&'a Transaction<'a>),
    /// The batch could not run (the reason): answer without running.
    Refuse(String),
}

/// What a queued write reports after its step: how to answer it once the batch ends,
/// and whether the transaction is still sound (its savepoint was released or rolled
/// back cleanly).
struct Ran {
    complete: Completion,
    sound: bool,
}

/// A queued write.
type Job = Box<dyn FnOnce(Step<'_>) -> Ran + Send>;

pub struct Connections {
    writer: Arc<Mutex<Connection>>,
    /// Sender of the committer's queue (`Sender` is `Sync`: writers share it).
    jobs: mpsc::Sender<Job>,
    readers: ReaderPool,
}

impl Connections {
    /// Opens (creating if needed) the database file, sets it up and migrates it, then
    /// opens the readers and starts the committer. Blocking: call from `spawn_blocking`.
    pub fn open(path: &Path) -> StoreResult<Connections> {
        let mut writer = Connection::open(path).map_err(sql)?;
        schema::configure(&writer)?;
        schema::enable_wal(&writer)?;
        schema::migrate(&mut writer)?;
        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            idle.push(open_reader(path)?);
        }
        let writer = Arc::new(Mutex::new(writer));
        let (jobs, queue) = mpsc::channel::<Job>();
        let committer = Arc::clone(&writer);
        std::thread::Builder::new()
            .name("sqlite-committer".to_owned())
            .spawn(move || commit_loop(&committer, &queue))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the sqlite committer: {e}"))
            })?;
        Ok(Connections {
            writer,
            jobs,
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

/// The committer: until the store is dropped (the queue closes), takes the writes
/// waiting and commits them together.
fn commit_loop(writer: &Mutex<Connection>, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (outcome, completions) = match writer.lock() {
            Ok(mut conn) => commit_batch(&mut conn, batch),
            // Someone panicked holding the connection outside a write: its state is
            // unknown, so nothing more is written until a restart.
            Err(_) => refuse_all(batch, "the writer connection was lost to a panic"),
        };
        for complete in completions {
            complete(outcome.clone());
        }
    }
}

/// Runs a batch in one transaction; returns the COMMIT's outcome and each write's answer.
fn commit_batch(conn: &mut Connection, batch: Vec<Job>) -> (Result<(), String>, Vec<Completion>) {
    // A rollback that failed earlier would leave the connection inside a transaction
    // and make every later BEGIN fail; end it first.
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        return refuse_all(batch, &e.to_string());
    }
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return refuse_all(batch, &e.to_string()),
    };
    let mut completions = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        let ran = job(Step::Run(&tx));
        completions.push(ran.complete);
        if !ran.sound {
            // A savepoint that could not be undone leaves that write's changes in the
            // transaction: nothing of this batch may commit.
            let why = "a write could not be rolled back; its batch was abandoned".to_owned();
            drop(tx);
            let (outcome, rest) = refuse_all(jobs.collect(), &why);
            completions.extend(rest);
            return (outcome, completions);
        }
    }
    let outcome = tx.commit().map_err(|e| e.to_string());
    (outcome, completions)
}

/// Answers every write of a batch that cannot run.
fn refuse_all(batch: Vec<Job>, why: &str) -> (Result<(), String>, Vec<Completion>) {
    let completions = batch
        .into_iter()
        .map(|job| job(Step::Refuse(why.to_owned())).complete)
        .collect();
    (Err(why.to_owned()), completions)
}

/// Runs `op` in the store's next commit (see the module doc), off the async runtime.
/// Its changes are kept when it returns `Ok` and rolled back when it returns an error
/// (or panics); the answer comes once the commit is durable.
pub async fn write<T, F>(conns: &Arc<Connections>, op: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel::<StoreResult<T>>();
    let job: Job = Box::new(move |step| {
        let (out, sound) = match step {
            Step::Run(tx) => in_savepoint(tx, op),
            Step::Refuse(why) => (
                Err(StoreError::Unavailable(format!(
                    "sqlite write not run: {why}"
                ))),
                true,
            ),
        };
        let complete: Completion = Box::new(move |committed: Result<(), String>| {
            let result = match (committed, out) {
                (_, Err(e)) => Err(e),
                (Ok(()), Ok(value)) => Ok(value),
                (Err(why), Ok(_)) => Err(StoreError::Unavailable(format!(
                    "sqlite commit failed: {why}"
                ))),
            };
            // The caller may have gone (a dropped request); the write stands anyway.
            let _ = answer.send(result);
        });
        Ran { complete, sound }
    });
    conns
        .jobs
        .send(job)
        .map_err(|_| StoreError::Unavailable("the sqlite committer has stopped".to_owned()))?;
    answered.await.map_err(|_| {
        StoreError::Unavailable("the sqlite write was dropped before it committed".to_owned())
    })?
}

/// `op` inside a savepoint: released on `Ok`, rolled back on an error or a panic.
/// The flag is false when the savepoint could not be ended: the transaction then holds
/// changes nobody answered for.
fn in_savepoint<T, F>(tx: &Transaction<'_>, op: F) -> (StoreResult<T>, bool)
where
    F: FnOnce(&Transaction<'_>) -> StoreResult<T>,
{
    if let Err(e) = tx.execute_batch("SAVEPOINT write") {
        return (Err(sql(e)), true);
    }
    let out = catch_unwind(AssertUnwindSafe(|| op(tx))).unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "a store write panicked; it was rolled back".to_owned(),
        ))
    });
    let end = if out.is_ok() {
        "RELEASE write"
    } else {
        "ROLLBACK TO write; RELEASE write"
    };
    match tx.execute_batch(end) {
        Ok(()) => (out, true),
        Err(e) => (Err(sql(e)), false),
    }
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
