//! Translation of SQLite and JSON failures into `StoreError`.
//!
//! Owns the rule of which failure means what to a caller: a taken key is `Conflict`,
//! a missing parent row is `NotFound`, an undecodable row is `Corrupt`, everything
//! else (I/O, locks, a panicked task) is `Unavailable` and may be retried.
//! Must never: put a stored value into an error message (documents hold webhook
//! secrets); only table, column and position are reported.

use rusqlite::ErrorCode;
use rusqlite::ffi;

use crate::store::StoreError;

/// Maps a SQLite error. Unique and primary-key violations name the key that is taken.
pub fn sql(err: rusqlite::Error) -> StoreError {
    match &err {
        rusqlite::Error::SqliteFailure(failure, message) => match failure.code {
            ErrorCode::ConstraintViolation => constraint(failure.extended_code, message),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(format!("sqlite: {err}"))
            }
            _ => StoreError::Unavailable(format!("sqlite: {err}")),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(format!("sqlite row: {err}")),
        _ => StoreError::Unavailable(format!("sqlite: {err}")),
    }
}

fn constraint(extended_code: i32, message: &Option<String>) -> StoreError {
    if extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY {
        return StoreError::NotFound;
    }
    // SQLite names the violated column ("UNIQUE constraint failed: plates.id"),
    // never the value.
    let text = message.as_deref().unwrap_or_default();
    let what = if text.contains("merchants.id") {
        "merchant id already exists"
    } else if text.contains("plates.id") {
        "plate id already exists"
    } else if text.contains("api_keys.hash") {
        "api key already in use"
    } else if text.contains("api_keys.merchant_id") {
        "merchant already has an api key"
    } else if text.contains("events.id") || text.contains("outbox.event_id") {
        "event id already exists"
    } else if extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        || extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
    {
        "key already exists"
    } else {
        return StoreError::Unavailable(format!("sqlite constraint failed: {text}"));
    };
    StoreError::Conflict(what)
}

/// A document column that does not decode into its record.
pub fn decode(what: &str, err: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!(
        "{what} document: {:?} error at line {} column {}",
        err.classify(),
        err.line(),
        err.column()
    ))
}

/// A record that does not encode (cannot happen for the domain types, but the
/// failure is still reported rather than unwrapped).
pub fn encode(what: &str, err: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!(
        "{what} document does not encode: {:?}",
        err.classify()
    ))
}

pub fn poisoned(what: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "sqlite {what} connection lost: an earlier operation panicked while holding it"
    ))
}

pub fn task_failed(err: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("store task did not complete: {err}"))
}
