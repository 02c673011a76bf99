//! Redis store: `trait Store` over one Redis server (or, unchanged, Redis Cluster).
//!
//! Owns the Redis connection, the key layout (`keys`), the Lua scripts (`lua/*.lua`)
//! and the persistence check. Must never: run a multi-key write as separate commands
//! (each is one Lua script over ONE merchant's keys), touch two merchants' keys in one
//! command, accept a server whose acknowledged writes can be lost unless the operator
//! said `store.allow_volatile = true`, read the clock, panic, or put a secret (URL
//! password, secret values, record contents) in a log line or error.
//!
//! # Key layout (`<p>` = the configured prefix)
//!
//! Every key of a merchant shares the hash tag `{m:<merchant id>}`:
//!
//! | key                              | type   | holds                                   |
//! |----------------------------------|--------|-----------------------------------------|
//! | `<p>{m:<id>}:merchant`           | string | merchant JSON                           |
//! | `<p>{m:<id>}:plates`             | zset   | plate ids scored by `created_at`        |
//! | `<p>{m:<id>}:plate:<plate id>`   | string | plate JSON                              |
//! | `<p>{m:<id>}:apikey`             | hash   | `hash` (current key hash), `record`     |
//! | `<p>{m:<id>}:idem:<sha256(key)>` | hash   | idempotency record (merchant API)       |
//!
//! Lookups that cannot be scoped to a merchant are single-key records with no tag:
//!
//! | key                            | type   | holds                                     |
//! |--------------------------------|--------|-------------------------------------------|
//! | `<p>merchants`                 | zset   | merchant ids scored by `created_at`; Redis orders ties by id |
//! | `<p>plate-owner:<plate id>`    | string | owning merchant id                        |
//! | `<p>apikey:<key hash>`         | string | merchant id                               |
//! | `<p>secret:<name>`             | string | server-wide secret bytes                  |
//! | `<p>idem:admin:<sha256(key)>`  | hash   | idempotency record (admin API)            |
//!
//! Payments keys (orders, refunds, ledger, events, outbox) and the two global work
//! sets `<p>due-merchants` and `<p>outbox-merchants` that the cross-merchant scans
//! read are laid out, with their retire protocol, in `payments`.
//!
//! Idempotency keys are hashed, so any client string is a safe, brace-free key.
//! An idempotency record holds `fingerprint`, `state`, `lease`, `lease_until`,
//! `expires_at`, `status`, `body`. Time is the caller's (`IdemClock.now`): a record
//! with `now >= expires_at` counts as absent even while the key still exists. Redis
//! drops the key `retention_ms` after the first begin (PEXPIRE relative to the
//! server's clock: an absolute PEXPIREAT of a caller's injected, possibly past, time
//! would delete a live record at once).
//!
//! # Write-ahead rule for global index entries
//!
//! A global entry cannot join a merchant's script (another cluster slot), so each
//! write first claims its global entries (set-if-absent, pointing to ids), and only
//! then runs the merchant's atomic script. A crash, timeout or conflict in between
//! leaves at most a dangling entry that names a merchant which does not hold the
//! thing. Every lookup therefore verifies against the merchant's own keys:
//! `merchant_by_api_key` checks the merchant's CURRENT `apikey` hash, `plate` checks
//! the plate exists under its owner's tag, `list_merchants` skips ids without a
//! merchant record. Dangling entries are never reclaimed by a different owner (a
//! claim by another owner is a `Conflict`), which keeps claims race-free; ids and key
//! hashes are random, so nothing legitimate ever needs a dangling entry's name. A
//! retry of the same operation finds its own claims and proceeds.
//!
//! # Durability
//!
//! `connect` and `health` read `INFO persistence` (`aof_enabled`) and
//! `CONFIG GET appendfsync`. Only AOF with `appendfsync always` makes a write durable
//! on return; anything else (or an fsync policy the server will not reveal) is
//! refused with `Misconfigured` unless `allow_volatile`, and `health` says so.
//!
//! # Errors
//!
//! Transport, timeout, loading and cluster-transition errors are `Unavailable` (the
//! call may be retried; a write may or may not have happened). Replies or records
//! that do not decode are `Corrupt`. Every Redis call is bounded by the configured
//! timeout, including the wait for a reconnect.

mod keys;
mod payments;
mod persistence;
mod scripts;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::keys::Keys;
use self::persistence::Persistence;
use self::scripts::Scripts;
use super::{
    IdemBegin, IdemClock, IdemScope, LeaseToken, MerchantBundle, Store, StoreError, StoreHealth,
    StoreResult, StoredResponse,
};
use crate::config::mask_url_password;
use crate::domain::{Merchant, MerchantId, Plate, PlateId, UnixMillis};

/// Reconnect attempts after the first one fails. The backoff starts at 1 s (the
/// client's fixed minimum) and doubles, capped by `RECONNECT_MAX_DELAY_MS`; calls
/// waiting on a reconnect are cut off by the store timeout anyway.
const RECONNECT_RETRIES: usize = 3;
const RECONNECT_BACKOFF_FACTOR: u64 = 2;
const RECONNECT_MAX_DELAY_MS: u64 = 1_000;

/// Largest page of merchant ids read per round trip by `list_merchants`.
const LIST_BATCH_MAX: usize = 500;

/// How often a running store asks the server again whether its writes are durable.
const DURABILITY_RECHECK: Duration = Duration::from_secs(1);

/// The Redis backend. Cheap to share: the connection multiplexes concurrent calls.
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Scripts,
    timeout: Duration,
    masked_url: String,
    /// False while the server is seen without durable writes (AOF or
    /// `appendfsync always` switched off after start) and `allow_volatile` is off:
    /// then writes that would be acknowledged are refused. Re-read every
    /// `DURABILITY_RECHECK` and on every health check.
    writes_durable: Arc<AtomicBool>,
    allow_volatile: bool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.masked_url)
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects, then refuses a server whose acknowledged writes could be lost
    /// (no AOF, or `appendfsync` not `always`, or unknown) unless `allow_volatile`.
    /// `timeout` bounds connecting and every later call.
    pub async fn connect(
        url: &str,
        prefix: &str,
        allow_volatile: bool,
        timeout: Duration,
    ) -> StoreResult<RedisStore> {
        let masked_url = mask_url_password(url);
        let keys = Keys::new(prefix).ok_or_else(|| {
            StoreError::Misconfigured(format!(
                "store.redis_prefix {prefix:?} contains '{{' or '}}', which would replace the \
                 per-merchant hash tag of every key"
            ))
        })?;
        if timeout.is_zero() {
            return Err(StoreError::Misconfigured(
                "store.redis_timeout_ms must be greater than 0".to_owned(),
            ));
        }
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::Misconfigured(format!("invalid redis url {masked_url}: {}", e.category()))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_factor(RECONNECT_BACKOFF_FACTOR)
            .set_max_delay(RECONNECT_MAX_DELAY_MS);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| match store_error("connect", &e) {
                StoreError::Unavailable(msg) => {
                    StoreError::Unavailable(format!("redis at {masked_url}: {msg}"))
                }
                other => other,
            })?;
        let store = RedisStore {
            conn,
            keys,
            scripts: Scripts::new(),
            timeout,
            masked_url,
            writes_durable: Arc::new(AtomicBool::new(true)),
            allow_volatile,
        };
        let persistence = store.persistence().await?;
        if !persistence.durable() {
            if !allow_volatile {
                return Err(StoreError::Misconfigured(
                    persistence.refusal(&store.masked_url),
                ));
            }
            tracing::warn!(
                url = %store.masked_url,
                durability = %persistence.describe(),
                "redis store runs WITHOUT durable writes because store.allow_volatile = true"
            );
        }
        tracing::info!(
            url = %store.masked_url,
            durability = %persistence.describe(),
            "redis store connected"
        );
        if !allow_volatile {
            store.watch_durability();
        }
        Ok(store)
    }

    /// Re-reads the server's persistence settings every `DURABILITY_RECHECK` until the
    /// store is dropped, so a server switched to non-durable writes after start stops
    /// acknowledging within that interval (and `/readyz` says so at once).
    fn watch_durability(&self) {
        let watcher = RedisStore {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            scripts: Scripts::new(),
            timeout: self.timeout,
            masked_url: self.masked_url.clone(),
            writes_durable: Arc::clone(&self.writes_durable),
            allow_volatile: self.allow_volatile,
        };
        let alive = Arc::downgrade(&self.writes_durable);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(DURABILITY_RECHECK).await;
                // Only the store and this task hold the flag: the store is gone.
                if alive.strong_count() <= 1 {
                    return;
                }
                // Unreachable is not "not durable": calls fail on their own then.
                if let Ok(persistence) = watcher.persistence().await {
                    watcher.note_durability(&persistence);
                }
            }
        });
    }

    /// Records what the server said about durability; logs a change once.
    fn note_durability(&self, persistence: &Persistence) {
        let durable = persistence.durable() || self.allow_volatile;
        let was = self.writes_durable.swap(durable, Ordering::SeqCst);
        if was && !durable {
            tracing::error!(
                url = %self.masked_url,
                durability = %persistence.describe(),
                "redis writes are no longer durable: refusing writes until they are"
            );
        } else if !was && durable {
            tracing::warn!(url = %self.masked_url, "redis writes are durable again");
        }
    }

    /// Refuses a write that would be acknowledged while the server's writes are not
    /// durable (see `writes_durable`).
    fn guard_durable(&self, what: &str) -> StoreResult<()> {
        if self.writes_durable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "redis {what}: refused, the server's writes are not durable (AOF with \
                 appendfsync always was switched off)"
            )))
        }
    }

    /// Runs one Redis call within the store timeout, mapping its errors.
    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(store_error(what, &e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis {what}: no reply within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn persistence(&self) -> StoreResult<Persistence> {
        let mut conn = self.conn.clone();
        let info: String = self
            .bounded(
                "INFO persistence",
                redis::cmd("INFO").arg("persistence").query_async(&mut conn),
            )
            .await?;
        let fsync = tokio::time::timeout(
            self.timeout,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendfsync")
                .query_async::<HashMap<String, String>>(&mut conn),
        )
        .await;
        let appendfsync = match fsync {
            Ok(Ok(mut settings)) => settings.remove("appendfsync"),
            // The server answered but will not say (CONFIG renamed away or denied by
            // ACL): unknown, which is not durable.
            Ok(Err(e)) if !is_transport(&e) => None,
            Ok(Err(e)) => return Err(store_error("CONFIG GET appendfsync", &e)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "redis CONFIG GET appendfsync: no reply within {} ms",
                    self.timeout.as_millis()
                )));
            }
        };
        Ok(Persistence {
            aof_enabled: Persistence::aof_enabled_from_info(&info),
            appendfsync,
        })
    }

    /// Claims a global index entry for `owner` (write-ahead); false if another owner
    /// holds it.
    async fn claim(&self, key: &str, owner: &MerchantId) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let claimed: i64 = self
            .bounded(
                "claim index entry",
                self.scripts
                    .claim_index
                    .key(key)
                    .arg(owner.as_str())
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(claimed == 1)
    }

    async fn merchant_exists(&self, merchant: &MerchantId) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let count: i64 = self
            .bounded(
                "EXISTS merchant",
                redis::cmd("EXISTS")
                    .arg(self.keys.merchant(merchant))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(count > 0)
    }

    /// Reads a global index entry that names a merchant.
    async fn owner(&self, what: &'static str, key: &str) -> StoreResult<Option<MerchantId>> {
        let mut conn = self.conn.clone();
        let owner: Option<String> = self
            .bounded(what, redis::cmd("GET").arg(key).query_async(&mut conn))
            .await?;
        owner
            .map(|text| {
                MerchantId::parse(&text)
                    .ok_or_else(|| StoreError::Corrupt(format!("{what}: not a merchant id")))
            })
            .transpose()
    }

    fn idem_key(&self, scope: &IdemScope, key: &str) -> String {
        match scope {
            IdemScope::Admin => self.keys.admin_idem(key),
            IdemScope::Merchant(merchant) => self.keys.merchant_idem(merchant, key),
        }
    }
}

/// Errors that mean "the server could not be reached or is between states".
fn is_transport(e: &RedisError) -> bool {
    e.is_io_error()
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::MasterDown
                | ErrorKind::Moved
                | ErrorKind::Ask
                | ErrorKind::ReadOnly
                | ErrorKind::ClusterConnectionNotFound
        )
}

/// Maps a Redis error. Messages name the operation and the error category; they
/// never echo reply contents (a reply may hold a secret).
fn store_error(what: &str, e: &RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::TypeError | ErrorKind::ParseError => {
            StoreError::Corrupt(format!("redis {what}: unexpected reply ({})", e.category()))
        }
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => {
            StoreError::Misconfigured(format!("redis {what}: {}", e.category()))
        }
        _ if e.code() == Some("WRONGTYPE") => {
            StoreError::Corrupt(format!("redis {what}: a key holds the wrong kind of value"))
        }
        _ if e.code() == Some("NOPERM") || e.code() == Some("NOAUTH") => {
            StoreError::Misconfigured(format!("redis {what}: {e}"))
        }
        _ => StoreError::Unavailable(format!("redis {what}: {e}")),
    }
}

fn to_json<T: Serialize>(what: &str, value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("{what} does not serialize: {:?}", e.classify())))
}

/// Decodes a JSON record; the error names position only, never content.
fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "{what} record is not valid ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

fn decode_merchant(id: &MerchantId, bytes: &[u8]) -> StoreResult<Merchant> {
    let merchant: Merchant = from_json("merchant", bytes)?;
    if merchant.id != *id {
        return Err(StoreError::Corrupt(format!(
            "merchant record under {id} names another merchant"
        )));
    }
    Ok(merchant)
}

fn utf8(what: &str, bytes: &[u8]) -> StoreResult<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("redis {what}: reply is not UTF-8")))
}

#[async_trait]
impl Store for RedisStore {
    async fn health(&self) -> StoreResult<StoreHealth> {
        let mut conn = self.conn.clone();
        let pong: String = self
            .bounded("PING", redis::cmd("PING").query_async(&mut conn))
            .await?;
        if pong != "PONG" {
            return Err(StoreError::Unavailable(
                "redis PING: unexpected answer".to_owned(),
            ));
        }
        let persistence = self.persistence().await?;
        self.note_durability(&persistence);
        Ok(StoreHealth {
            backend: "redis",
            durable: persistence.durable(),
            durability: persistence.describe(),
        })
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let mut conn = self.conn.clone();
        let stored: Option<Vec<u8>> = self
            .bounded(
                "secret",
                self.scripts
                    .secret
                    .key(self.keys.secret(name))
                    .arg(candidate)
                    .invoke_async(&mut conn),
            )
            .await?;
        stored.ok_or_else(|| StoreError::Corrupt(format!("secret {name:?} vanished after SET")))
    }

    async fn create_merchant(&self, bundle: &MerchantBundle) -> StoreResult<()> {
        self.guard_durable("create_merchant")?;
        let merchant = &bundle.merchant;
        let plate = &bundle.first_plate;
        let key = &bundle.api_key;
        if plate.merchant_id != merchant.id {
            return Err(StoreError::Conflict(
                "first plate belongs to another merchant",
            ));
        }
        let merchant_json = to_json("merchant", merchant)?;
        let plate_json = to_json("plate", plate)?;
        let key_json = to_json("api key", key)?;
        let mut conn = self.conn.clone();

        // Write-ahead: global index entries first (see the module doc).
        self.bounded(
            "ZADD merchants",
            redis::cmd("ZADD")
                .arg(self.keys.merchants())
                .arg("NX")
                .arg(merchant.created_at)
                .arg(merchant.id.as_str())
                .query_async::<()>(&mut conn),
        )
        .await?;
        if !self
            .claim(&self.keys.plate_owner(&plate.id), &merchant.id)
            .await?
        {
            return Err(StoreError::Conflict("plate id exists"));
        }
        if !self
            .claim(&self.keys.api_key_owner(&key.hash), &merchant.id)
            .await?
        {
            return Err(StoreError::Conflict("api key hash exists"));
        }

        let outcome: String = self
            .bounded(
                "create_merchant",
                self.scripts
                    .create_merchant
                    .key(self.keys.merchant(&merchant.id))
                    .key(self.keys.plates(&merchant.id))
                    .key(self.keys.plate(&merchant.id, &plate.id))
                    .key(self.keys.api_key(&merchant.id))
                    .arg(merchant_json)
                    .arg(plate_json)
                    .arg(plate.created_at)
                    .arg(plate.id.as_str())
                    .arg(key.hash.as_str())
                    .arg(key_json)
                    .invoke_async(&mut conn),
            )
            .await?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "merchant_exists" => Err(StoreError::Conflict("merchant id exists")),
            "plate_exists" => Err(StoreError::Conflict("plate id exists")),
            _ => Err(StoreError::Corrupt(
                "create_merchant script gave an unknown answer".to_owned(),
            )),
        }
    }

    async fn merchant(&self, id: &MerchantId) -> StoreResult<Option<Merchant>> {
        let mut conn = self.conn.clone();
        let record: Option<Vec<u8>> = self
            .bounded(
                "GET merchant",
                redis::cmd("GET")
                    .arg(self.keys.merchant(id))
                    .query_async(&mut conn),
            )
            .await?;
        record.map(|bytes| decode_merchant(id, &bytes)).transpose()
    }

    async fn list_merchants(
        &self,
        after: Option<&MerchantId>,
        limit: usize,
    ) -> StoreResult<Vec<Merchant>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let batch = limit.min(LIST_BATCH_MAX);
        let mut cursor = after.map(|id| id.as_str().to_owned()).unwrap_or_default();
        let mut conn = self.conn.clone();
        loop {
            let page: Vec<String> = self
                .bounded(
                    "merchants page",
                    self.scripts
                        .merchants_page
                        .key(self.keys.merchants())
                        .arg(cursor.as_str())
                        .arg(batch)
                        .invoke_async(&mut conn),
                )
                .await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            let ids = page
                .iter()
                .map(|text| {
                    MerchantId::parse(text).ok_or_else(|| {
                        StoreError::Corrupt("merchants index holds a non-id".to_owned())
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            // One GET per merchant, pipelined: different merchants live on different
            // cluster slots, so no MGET across them.
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("GET").arg(self.keys.merchant(id));
            }
            let records: Vec<Option<Vec<u8>>> = self
                .bounded("GET merchants", pipe.query_async(&mut conn))
                .await?;
            for (id, record) in ids.iter().zip(records) {
                // No record: a dangling write-ahead entry; skip it.
                if let Some(bytes) = record {
                    out.push(decode_merchant(id, &bytes)?);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if page.len() < batch {
                return Ok(out);
            }
            cursor = last.clone();
        }
    }

    async fn merchant_by_api_key(&self, key_hash: &str) -> StoreResult<Option<Merchant>> {
        let Some(owner) = self
            .owner("GET apikey index", &self.keys.api_key_owner(key_hash))
            .await?
        else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let record: Option<Vec<u8>> = self
            .bounded(
                "merchant_by_api_key",
                self.scripts
                    .merchant_by_api_key
                    .key(self.keys.api_key(&owner))
                    .key(self.keys.merchant(&owner))
                    .arg(key_hash)
                    .invoke_async(&mut conn),
            )
            .await?;
        record
            .map(|bytes| decode_merchant(&owner, &bytes))
            .transpose()
    }

    async fn rotate_api_key(
        &self,
        merchant: &MerchantId,
        key: &crate::domain::ApiKeyRecord,
    ) -> StoreResult<()> {
        self.guard_durable("rotate_api_key")?;
        // Merchants are never deleted, so checking first is stable and keeps a rotation
        // for an unknown merchant from leaving an index entry behind.
        if !self.merchant_exists(merchant).await? {
            return Err(StoreError::NotFound);
        }
        let key_json = to_json("api key", key)?;
        if !self
            .claim(&self.keys.api_key_owner(&key.hash), merchant)
            .await?
        {
            return Err(StoreError::Conflict("api key hash exists"));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<Vec<u8>> = self
            .bounded(
                "rotate_api_key",
                self.scripts
                    .rotate_api_key
                    .key(self.keys.merchant(merchant))
                    .key(self.keys.api_key(merchant))
                    .arg(key.hash.as_str())
                    .arg(key_json)
                    .invoke_async(&mut conn),
            )
            .await?;
        let old = match reply.as_slice() {
            [status, old] if status.as_slice() == b"ok" => utf8("rotate_api_key", old)?,
            [status] if status.as_slice() == b"merchant_missing" => {
                return Err(StoreError::NotFound);
            }
            _ => {
                return Err(StoreError::Corrupt(
                    "rotate_api_key script gave an unknown answer".to_owned(),
                ));
            }
        };
        if !old.is_empty() && old != key.hash {
            // The rotation is committed; the old index entry is only a lookup hint that
            // `merchant_by_api_key` already rejects, so failing to drop it is logged,
            // not returned.
            let release = self
                .bounded(
                    "release old apikey index",
                    self.scripts
                        .release_index
                        .key(self.keys.api_key_owner(&old))
                        .arg(merchant.as_str())
                        .invoke_async::<i64>(&mut conn),
                )
                .await;
            if let Err(error) = release {
                tracing::warn!(
                    merchant = %merchant,
                    %error,
                    "old API key index entry left behind after rotation (lookups ignore it)"
                );
            }
        }
        Ok(())
    }

    async fn insert_plate(&self, plate: &Plate) -> StoreResult<()> {
        self.guard_durable("insert_plate")?;
        let merchant = &plate.merchant_id;
        if !self.merchant_exists(merchant).await? {
            return Err(StoreError::NotFound);
        }
        let plate_json = to_json("plate", plate)?;
        if !self
            .claim(&self.keys.plate_owner(&plate.id), merchant)
            .await?
        {
            return Err(StoreError::Conflict("plate id exists"));
        }
        let mut conn = self.conn.clone();
        let outcome: String = self
            .bounded(
                "insert_plate",
                self.scripts
                    .insert_plate
                    .key(self.keys.merchant(merchant))
                    .key(self.keys.plates(merchant))
                    .key(self.keys.plate(merchant, &plate.id))
                    .arg(plate_json)
                    .arg(plate.created_at)
                    .arg(plate.id.as_str())
                    .invoke_async(&mut conn),
            )
            .await?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "merchant_missing" => Err(StoreError::NotFound),
            "plate_exists" => Err(StoreError::Conflict("plate id exists")),
            _ => Err(StoreError::Corrupt(
                "insert_plate script gave an unknown answer".to_owned(),
            )),
        }
    }

    async fn plate(&self, id: &PlateId) -> StoreResult<Option<Plate>> {
        let Some(owner) = self
            .owner("GET plate-owner index", &self.keys.plate_owner(id))
            .await?
        else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let record: Option<Vec<u8>> = self
            .bounded(
                "GET plate",
                redis::cmd("GET")
                    .arg(self.keys.plate(&owner, id))
                    .query_async(&mut conn),
            )
            .await?;
        // No record: a dangling write-ahead entry, so no such plate.
        let Some(bytes) = record else {
            return Ok(None);
        };
        let plate: Plate = from_json("plate", &bytes)?;
        if plate.id != *id || plate.merchant_id != owner {
            return Err(StoreError::Corrupt(format!(
                "plate record {id} does not match its key"
            )));
        }
        Ok(Some(plate))
    }

    async fn plates_of(&self, merchant: &MerchantId) -> StoreResult<Vec<Plate>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = self
            .bounded(
                "ZRANGE plates",
                redis::cmd("ZRANGE")
                    .arg(self.keys.plates(merchant))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids
            .iter()
            .map(|text| {
                PlateId::parse(text).ok_or_else(|| {
                    StoreError::Corrupt(format!("plates of {merchant} hold a non-id"))
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Same hash tag, same slot: one MGET. Plates are never deleted, so reading
        // after the ZRANGE sees every listed plate.
        let mut mget = redis::cmd("MGET");
        for id in &ids {
            mget.arg(self.keys.plate(merchant, id));
        }
        let records: Vec<Option<Vec<u8>>> = self
            .bounded("MGET plates", mget.query_async(&mut conn))
            .await?;
        ids.iter()
            .zip(records)
            .map(|(id, record)| {
                let bytes = record.ok_or_else(|| {
                    StoreError::Corrupt(format!("plate {id} is listed without its record"))
                })?;
                from_json::<Plate>("plate", &bytes)
            })
            .collect()
    }

    async fn idem_begin(
        &self,
        scope: &IdemScope,
        key: &str,
        fingerprint: &[u8; 32],
        clock: IdemClock,
    ) -> StoreResult<IdemBegin> {
        self.guard_durable("idem_begin")?;
        let lease = LeaseToken::generate();
        let lease_until = clock.now.saturating_add(clock.lease_ms);
        let expires_at = clock.now.saturating_add(clock.retention_ms);
        let ttl_ms = clock.retention_ms.max(1);
        let mut conn = self.conn.clone();
        let reply: Vec<Vec<u8>> = self
            .bounded(
                "idem_begin",
                self.scripts
                    .idem_begin
                    .key(self.idem_key(scope, key))
                    .arg(hex::encode(fingerprint))
                    .arg(clock.now)
                    .arg(lease.0.as_str())
                    .arg(lease_until)
                    .arg(expires_at)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn),
            )
            .await?;
        match reply.as_slice() {
            [tag, held] if tag.as_slice() == b"started" => {
                Ok(IdemBegin::Started(LeaseToken(utf8("idem_begin", held)?)))
            }
            [tag] if tag.as_slice() == b"in_progress" => Ok(IdemBegin::InProgress),
            [tag] if tag.as_slice() == b"reused" => Ok(IdemBegin::KeyReused),
            [tag, status, body] if tag.as_slice() == b"replay" => {
                let status = utf8("idem_begin", status)?.parse::<u16>().map_err(|_| {
                    StoreError::Corrupt("idempotency record has a bad status".to_owned())
                })?;
                Ok(IdemBegin::Replay(StoredResponse {
                    status,
                    body: body.clone(),
                }))
            }
            _ => Err(StoreError::Corrupt(
                "idempotency record is incomplete".to_owned(),
            )),
        }
    }

    async fn idem_finish(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        self.guard_durable("idem_finish")?;
        let mut conn = self.conn.clone();
        let stored: i64 = self
            .bounded(
                "idem_finish",
                self.scripts
                    .idem_finish
                    .key(self.idem_key(scope, key))
                    .arg(lease.0.as_str())
                    .arg(response.status)
                    .arg(response.body.as_slice())
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(stored == 1)
    }

    async fn idem_release(
        &self,
        scope: &IdemScope,
        key: &str,
        lease: &LeaseToken,
    ) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let released: i64 = self
            .bounded(
                "idem_release",
                self.scripts
                    .idem_release
                    .key(self.idem_key(scope, key))
                    .arg(lease.0.as_str())
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(released == 1)
    }

    /// Nothing to do: every record carries a key TTL of its retention (set by
    /// `idem_begin.lua`), so Redis deletes it by itself.
    async fn idem_purge_expired(&self, _now: UnixMillis, _limit: usize) -> StoreResult<usize> {
        Ok(0)
    }
}
