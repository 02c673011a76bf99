//! The SQLite file's settings and schema: connection pragmas and numbered migrations.
//!
//! Owns the DDL and `PRAGMA user_version` (= how many migrations the file has had).
//! Must never: edit a migration that has shipped (files in the field already ran it;
//! a change is a new, higher-numbered migration), or open a file whose schema is newer
//! than this build understands.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::errors::sql;
use crate::store::{StoreError, StoreResult};

/// How long a connection waits for another process (e.g. the CLI next to a running
/// server) to release the write lock before reporting `Unavailable`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection (rusqlite's default is 16).
const STATEMENT_CACHE: usize = 64;

/// Migration `i` (0-based) brings the file from `user_version = i` to `i + 1`.
/// Documents are JSON; the other columns exist only for keys, lookups and ordering.
pub const MIGRATIONS: &[&str] = &[
    // 1: merchants, plates, current API keys, server secrets, idempotency records.
    "
    CREATE TABLE merchants (
        id         TEXT    NOT NULL PRIMARY KEY,
        created_at INTEGER NOT NULL,
        doc        TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX merchants_by_creation ON merchants (created_at, id);

    CREATE TABLE plates (
        id          TEXT    NOT NULL PRIMARY KEY,
        merchant_id TEXT    NOT NULL REFERENCES merchants (id),
        created_at  INTEGER NOT NULL,
        doc         TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX plates_by_merchant ON plates (merchant_id, created_at, id);

    -- Only the CURRENT key of each merchant: rotation replaces the row, so a
    -- rotated-out hash finds nothing.
    CREATE TABLE api_keys (
        hash        TEXT NOT NULL PRIMARY KEY,
        merchant_id TEXT NOT NULL UNIQUE REFERENCES merchants (id),
        doc         TEXT NOT NULL
    ) STRICT;

    CREATE TABLE secrets (
        name  TEXT NOT NULL PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;

    -- scope is 'admin' or 'm:<merchant id>'. A started record holds a lease; a
    -- finished one holds the response (status, body) for replay.
    CREATE TABLE idempotency (
        scope       TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        fingerprint BLOB    NOT NULL,
        state       TEXT    NOT NULL CHECK (state IN ('started', 'finished')),
        lease_token TEXT,
        lease_until INTEGER,
        expires_at  INTEGER NOT NULL,
        status      INTEGER,
        body        BLOB,
        PRIMARY KEY (scope, key),
        CHECK ((state = 'started'  AND lease_token IS NOT NULL AND lease_until IS NOT NULL
                                   AND status IS NULL AND body IS NULL)
            OR (state = 'finished' AND lease_token IS NULL AND lease_until IS NULL
                                   AND status IS NOT NULL AND body IS NOT NULL))
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
    ",
    // 2: payments: orders, refunds, dedupe keys, the ledger and its balances, merchant
    // events and their delivery outbox. No foreign key to merchants: an order names its
    // merchant in its own id, and the payments contract holds for any merchant id (the
    // redis backend has no such link either).
    "
    -- next_check_at is NULL once the order is terminal, so the partial index holds
    -- exactly the open orders the reconciler may have to act on (until migration 3).
    CREATE TABLE orders (
        id            TEXT    NOT NULL PRIMARY KEY,
        merchant_id   TEXT    NOT NULL,
        status        TEXT    NOT NULL
                      CHECK (status IN ('created', 'pending', 'succeeded', 'failed', 'expired')),
        created_at    INTEGER NOT NULL,
        next_check_at INTEGER,
        version       INTEGER NOT NULL CHECK (version > 0),
        doc           TEXT    NOT NULL,
        CHECK (next_check_at IS NULL OR status IN ('created', 'pending'))
    ) STRICT;
    CREATE INDEX orders_by_merchant ON orders (merchant_id, created_at DESC, id DESC);
    CREATE INDEX orders_due ON orders (next_check_at, id) WHERE next_check_at IS NOT NULL;

    CREATE TABLE refunds (
        id          TEXT    NOT NULL PRIMARY KEY,
        order_id    TEXT    NOT NULL,
        merchant_id TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        doc         TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX refunds_by_order ON refunds (order_id, created_at, id);

    -- Wallet-event and operation keys, kept forever.
    CREATE TABLE dedupe (
        merchant_id TEXT NOT NULL,
        key         TEXT NOT NULL,
        PRIMARY KEY (merchant_id, key)
    ) STRICT, WITHOUT ROWID;

    -- seq is the posting order; AUTOINCREMENT never hands out a number twice.
    CREATE TABLE ledger_entries (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT    NOT NULL UNIQUE,
        merchant_id TEXT    NOT NULL,
        order_id    TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        doc         TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX ledger_entries_by_merchant ON ledger_entries (merchant_id, seq);
    CREATE INDEX ledger_entries_by_order ON ledger_entries (order_id, seq);

    -- Debits minus credits per account, changed only by the entry posted in the same
    -- transaction. currency is the ISO 4217 alpha code.
    CREATE TABLE balances (
        merchant_id TEXT    NOT NULL,
        currency    TEXT    NOT NULL,
        account     TEXT    NOT NULL,
        balance     INTEGER NOT NULL,
        PRIMARY KEY (merchant_id, currency, account)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT    NOT NULL UNIQUE,
        merchant_id TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        doc         TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX events_by_merchant ON events (merchant_id, seq);

    -- One row per event. A claim sets a lease (token + expiry); only a pending event
    -- can hold one.
    CREATE TABLE outbox (
        event_id        TEXT    NOT NULL PRIMARY KEY,
        merchant_id     TEXT    NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts        INTEGER NOT NULL CHECK (attempts >= 0),
        next_attempt_at INTEGER NOT NULL,
        lease_token     TEXT,
        lease_until     INTEGER,
        last_error      TEXT,
        CHECK ((lease_token IS NULL) = (lease_until IS NULL)),
        CHECK (state = 'pending' OR lease_token IS NULL)
    ) STRICT;
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    ",
    // 3: the reconciler also looks at orders that are no longer open (an expired order
    // whose close the wallet never confirmed, a succeeded order with refunds in
    // flight), so `next_check_at` is no longer tied to the open statuses: it holds
    // `Order::due_at`. SQLite cannot drop a CHECK, so the table is rebuilt. Outbox
    // rows remember when their retry window started (a resend starts a new one; NULL
    // means when the event was created).
    "
    CREATE TABLE orders_v3 (
        id            TEXT    NOT NULL PRIMARY KEY,
        merchant_id   TEXT    NOT NULL,
        status        TEXT    NOT NULL
                      CHECK (status IN ('created', 'pending', 'succeeded', 'failed', 'expired')),
        created_at    INTEGER NOT NULL,
        next_check_at INTEGER,
        version       INTEGER NOT NULL CHECK (version > 0),
        doc           TEXT    NOT NULL,
        CHECK (next_check_at IS NULL OR status <> 'failed')
    ) STRICT;
    INSERT INTO orders_v3 (id, merchant_id, status, created_at, next_check_at, version, doc)
        SELECT id, merchant_id, status, created_at, next_check_at, version, doc FROM orders;
    DROP TABLE orders;
    ALTER TABLE orders_v3 RENAME TO orders;
    CREATE INDEX orders_by_merchant ON orders (merchant_id, created_at DESC, id DESC);
    CREATE INDEX orders_due ON orders (next_check_at, id) WHERE next_check_at IS NOT NULL;

    ALTER TABLE outbox ADD COLUMN retry_window_from INTEGER;
    ",
];

/// Settings every connection needs. `synchronous=FULL` with WAL fsyncs the log on every
/// commit, so a write acknowledged to a caller survives power loss.
pub fn configure(conn: &Connection) -> StoreResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql)?;
    // Every statement the store runs fits, so a burst of one kind of operation (e.g.
    // outbox claims) does not evict and re-prepare the callback commit's statements.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Puts the file in WAL mode (persistent: stored in the file itself). Refuses a file
/// system where SQLite silently keeps another journal mode.
pub fn enable_wal(conn: &Connection) -> StoreResult<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql)?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(StoreError::Misconfigured(format!(
            "sqlite refused WAL journal mode (got {mode:?})"
        )))
    }
}

pub fn user_version(conn: &Connection) -> StoreResult<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)
}

/// Applies the migrations the file has not had yet, each in its own write transaction
/// together with its `user_version` bump, so a crash leaves the file at a whole version.
pub fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let current = user_version(conn)?;
    if current > known {
        return Err(StoreError::Misconfigured(format!(
            "database schema version {current} is newer than this build understands ({known})"
        )));
    }
    for (index, ddl) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        // Another process may have migrated between our read and our lock.
        if user_version(&tx)? >= version {
            continue;
        }
        tx.execute_batch(ddl).map_err(sql)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}
