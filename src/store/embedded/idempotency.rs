//! Idempotency records in SQLite: begin, finish, release.
//!
//! Owns the state machine of one `(scope, key)` row: absent -> started (leased) ->
//! finished (replayable) until `expires_at`, then absent again; `purge_expired`
//! deletes rows past `expires_at` (by the `idempotency_by_expiry` index), so the
//! table, encrypted responses included, does not grow forever. Each function runs
//! inside the caller's single write transaction, so the read and the write that
//! depends on it cannot interleave with another request's.
//! Must never: read the clock (the caller's `IdemClock.now` is the only time), let a
//! stale lease finish or release a record, or change a finished record.

use rusqlite::{Connection, OptionalExtension, params};

use super::errors::sql;
use crate::store::{
    IdemBegin, IdemClock, IdemScope, LeaseToken, StoreError, StoreResult, StoredResponse,
};

const STARTED: &str = "started";
const FINISHED: &str = "finished";

/// The text form of a scope: `admin` or `m:<merchant id>`. Merchant ids never contain
/// `:`, so the two forms cannot collide.
pub fn scope_text(scope: &IdemScope) -> String {
    match scope {
        IdemScope::Admin => "admin".to_owned(),
        IdemScope::Merchant(id) => format!("m:{id}"),
    }
}

/// A row as read, before the clock is applied.
struct Record {
    fingerprint: Vec<u8>,
    state: String,
    lease_until: Option<i64>,
    expires_at: i64,
    status: Option<i64>,
    body: Option<Vec<u8>>,
}

pub fn begin(
    conn: &Connection,
    scope: &str,
    key: &str,
    fingerprint: &[u8; 32],
    clock: IdemClock,
) -> StoreResult<IdemBegin> {
    let existing = conn
        .prepare_cached(
            "SELECT fingerprint, state, lease_until, expires_at, status, body
             FROM idempotency WHERE scope = ?1 AND key = ?2",
        )
        .map_err(sql)?
        .query_row(params![scope, key], |row| {
            Ok(Record {
                fingerprint: row.get(0)?,
                state: row.get(1)?,
                lease_until: row.get(2)?,
                expires_at: row.get(3)?,
                status: row.get(4)?,
                body: row.get(5)?,
            })
        })
        .optional()
        .map_err(sql)?;

    let Some(record) = existing else {
        return start(conn, scope, key, fingerprint, clock);
    };
    if clock.now >= record.expires_at {
        // Retention is over: the key is free, whatever the old record said.
        conn.prepare_cached("DELETE FROM idempotency WHERE scope = ?1 AND key = ?2")
            .map_err(sql)?
            .execute(params![scope, key])
            .map_err(sql)?;
        return start(conn, scope, key, fingerprint, clock);
    }
    if record.fingerprint.as_slice() != fingerprint.as_slice() {
        return Ok(IdemBegin::KeyReused);
    }
    match record.state.as_str() {
        FINISHED => {
            let status = record
                .status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| corrupt("finished record without a valid status"))?;
            let body = record
                .body
                .ok_or_else(|| corrupt("finished record without a body"))?;
            Ok(IdemBegin::Replay(StoredResponse { status, body }))
        }
        STARTED => {
            let lease_until = record
                .lease_until
                .ok_or_else(|| corrupt("started record without a lease"))?;
            if clock.now < lease_until {
                return Ok(IdemBegin::InProgress);
            }
            // The holder's lease ran out (its process likely died): take the request
            // over with a new lease. Retention still counts from the first begin.
            let lease = LeaseToken::generate();
            conn.prepare_cached(
                "UPDATE idempotency SET lease_token = ?3, lease_until = ?4
                 WHERE scope = ?1 AND key = ?2",
            )
            .map_err(sql)?
            .execute(params![
                scope,
                key,
                lease.0,
                clock.now.saturating_add(clock.lease_ms)
            ])
            .map_err(sql)?;
            Ok(IdemBegin::Started(lease))
        }
        _ => Err(corrupt("unknown record state")),
    }
}

fn start(
    conn: &Connection,
    scope: &str,
    key: &str,
    fingerprint: &[u8; 32],
    clock: IdemClock,
) -> StoreResult<IdemBegin> {
    let lease = LeaseToken::generate();
    conn.prepare_cached(
        "INSERT INTO idempotency (scope, key, fingerprint, state, lease_token, lease_until,
                                  expires_at)
         VALUES (?1, ?2, ?3, 'started', ?4, ?5, ?6)",
    )
    .map_err(sql)?
    .execute(params![
        scope,
        key,
        fingerprint.as_slice(),
        lease.0,
        clock.now.saturating_add(clock.lease_ms),
        clock.now.saturating_add(clock.retention_ms)
    ])
    .map_err(sql)?;
    Ok(IdemBegin::Started(lease))
}

/// Stores the response if `lease` still owns the started record; true when it did.
pub fn finish(
    conn: &Connection,
    scope: &str,
    key: &str,
    lease: &LeaseToken,
    response: &StoredResponse,
) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE idempotency
             SET state = 'finished', status = ?4, body = ?5, lease_token = NULL,
                 lease_until = NULL
             WHERE scope = ?1 AND key = ?2 AND state = 'started' AND lease_token = ?3",
        )
        .map_err(sql)?
        .execute(params![
            scope,
            key,
            lease.0,
            i64::from(response.status),
            response.body
        ])
        .map_err(sql)?;
    Ok(changed == 1)
}

/// Deletes the started record if `lease` still owns it; true when it did.
pub fn release(conn: &Connection, scope: &str, key: &str, lease: &LeaseToken) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached(
            "DELETE FROM idempotency
             WHERE scope = ?1 AND key = ?2 AND state = 'started' AND lease_token = ?3",
        )
        .map_err(sql)?
        .execute(params![scope, key, lease.0])
        .map_err(sql)?;
    Ok(changed == 1)
}

/// Deletes up to `limit` rows whose retention is over at `now`, oldest first; returns
/// how many. The range scan reads the `idempotency_by_expiry` index only.
pub fn purge_expired(conn: &Connection, now: i64, limit: usize) -> StoreResult<usize> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let deleted = conn
        .prepare_cached(PURGE_EXPIRED)
        .map_err(sql)?
        .execute(params![now, limit])
        .map_err(sql)?;
    Ok(deleted)
}

/// Rows past retention at ?1, at most ?2 of them, found through the expiry index.
pub const PURGE_EXPIRED: &str = "DELETE FROM idempotency WHERE (scope, key) IN (
         SELECT scope, key FROM idempotency WHERE expires_at <= ?1
         ORDER BY expires_at LIMIT ?2)";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("idempotency {what}"))
}
