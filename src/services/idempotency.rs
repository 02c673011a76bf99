//! Idempotent POSTs with Stripe's semantics, on top of `Store::idem_*`.
//!
//! Same key + same request → the stored response; same key + different request →
//! `idempotency_key_reused` (422); same key while the first is still running →
//! `request_in_progress` (409). A request that fails before any effect releases its
//! key, so the client can retry it. The fingerprint is SHA-256 over the method, the
//! path and the body with JSON canonicalised (key order and whitespace do not matter).
//!
//! Stored responses are encrypted (AES-256-GCM) under a key derived from a server
//! secret AND the client's Idempotency-Key, which the store never keeps in clear
//! (Redis hashes it; SQLite keeps it but not the server secret): a response that
//! carries a freshly issued API key is thus not readable from a store dump alone.
//! Must never: hold a store transaction open while the handler runs (wallet calls
//! take seconds) — the lease in the record does that job.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::clock::DynClock;
use crate::error::{ApiError, ErrorCode};
use crate::store::{DynStore, IdemBegin, IdemClock, IdemScope, LeaseToken, StoredResponse};

pub const HEADER: &str = "Idempotency-Key";
const MAX_KEY_LEN: usize = 255;

pub struct Idempotency {
    store: DynStore,
    clock: DynClock,
    secret: Vec<u8>,
    lease_ms: i64,
    retention_ms: i64,
}

/// A started request: the caller must `finish` or `release` it.
#[derive(Debug)]
pub struct Pending {
    scope: IdemScope,
    key: String,
    lease: LeaseToken,
}

#[derive(Debug)]
pub enum Begin {
    Fresh(Pending),
    Replay { status: u16, body: Vec<u8> },
}

/// Checks the header value: 1..=255 printable ASCII characters.
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::InvalidIdempotencyKey))
    }
}

pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(path.as_bytes());
    hash.update([0]);
    match serde_json::from_slice::<serde_json::Value>(body) {
        // serde_json's Map is ordered by key, so this is a canonical form.
        Ok(value) => hash.update(value.to_string().as_bytes()),
        Err(_) => hash.update(body),
    }
    hash.finalize().into()
}

impl Idempotency {
    pub fn new(
        store: DynStore,
        clock: DynClock,
        secret: Vec<u8>,
        lease_ms: i64,
        retention_ms: i64,
    ) -> Idempotency {
        Idempotency {
            store,
            clock,
            secret,
            lease_ms,
            retention_ms,
        }
    }

    pub async fn begin(
        &self,
        scope: IdemScope,
        key: &str,
        fingerprint: &[u8; 32],
    ) -> Result<Begin, ApiError> {
        validate_key(key)?;
        let clock = IdemClock {
            now: self.clock.now_ms(),
            lease_ms: self.lease_ms,
            retention_ms: self.retention_ms,
        };
        match self
            .store
            .idem_begin(&scope, key, fingerprint, clock)
            .await?
        {
            IdemBegin::Started(lease) => Ok(Begin::Fresh(Pending {
                scope,
                key: key.to_owned(),
                lease,
            })),
            IdemBegin::InProgress => Err(ApiError::new(ErrorCode::RequestInProgress)),
            IdemBegin::KeyReused => Err(ApiError::new(ErrorCode::IdempotencyKeyReused)),
            IdemBegin::Replay(stored) => {
                let body = self.cipher(&scope, key).open(&stored.body).ok_or_else(|| {
                    ApiError::internal("stored idempotent response does not decrypt")
                })?;
                Ok(Begin::Replay {
                    status: stored.status,
                    body,
                })
            }
        }
    }

    pub async fn finish(&self, pending: Pending, status: u16, body: &[u8]) -> Result<(), ApiError> {
        let sealed = self.cipher(&pending.scope, &pending.key).seal(body)?;
        let stored = StoredResponse {
            status,
            body: sealed,
        };
        let owned = self
            .store
            .idem_finish(&pending.scope, &pending.key, &pending.lease, &stored)
            .await?;
        if !owned {
            // Our lease expired and another request took the key over; its response
            // will be the stored one. Ours is still correct for this client.
            tracing::warn!("idempotency lease lost before finish");
        }
        Ok(())
    }

    /// Best effort: if it fails, the lease expires and frees the key anyway.
    pub async fn release(&self, pending: Pending) {
        if let Err(e) = self
            .store
            .idem_release(&pending.scope, &pending.key, &pending.lease)
            .await
        {
            tracing::warn!(error = %e, "could not release idempotency key");
        }
    }

    fn cipher(&self, scope: &IdemScope, key: &str) -> ResponseCipher {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"idempotency-response:v1\0");
        match scope {
            IdemScope::Admin => mac.update(b"admin"),
            IdemScope::Merchant(id) => mac.update(id.as_str().as_bytes()),
        }
        mac.update(b"\0");
        mac.update(key.as_bytes());
        ResponseCipher(mac.finalize().into_bytes().into())
    }
}

/// Records purged per store call.
const PURGE_BATCH: usize = 1_000;

/// One purge pass: deletes idempotency records past their retention, a batch at a
/// time. Returns how many it deleted when the batch was full (more may wait), 0
/// otherwise, so the worker rests until the next interval.
pub async fn purge_once(state: &crate::startup::AppState) -> usize {
    match state
        .store
        .idem_purge_expired(state.clock.now_ms(), PURGE_BATCH)
        .await
    {
        Ok(deleted) if deleted >= PURGE_BATCH => deleted,
        Ok(deleted) => {
            if deleted > 0 {
                tracing::debug!(deleted, "expired idempotency records purged");
            }
            0
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not purge expired idempotency records");
            0
        }
    }
}

struct ResponseCipher([u8; 32]);

impl ResponseCipher {
    fn key(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .ok()
            .map(LessSafeKey::new)
    }

    /// nonce || ciphertext || tag
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, ApiError> {
        let key = self.key().ok_or_else(|| ApiError::internal("aead key"))?;
        let nonce_bytes = crate::domain::ids::random_bytes::<NONCE_LEN>();
        let mut buffer = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::empty(),
            &mut buffer,
        )
        .map_err(|_| ApiError::internal("aead seal"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buffer);
        Ok(out)
    }

    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let key = self.key()?;
        let (nonce, rest) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = rest.to_vec();
        let plain = key.open_in_place(nonce, Aad::empty(), &mut buffer).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_json_key_order_and_whitespace() {
        let a = fingerprint("POST", "/v1/merchants", br#"{"a":1,"b":"x"}"#);
        let b = fingerprint("POST", "/v1/merchants", b"{ \"b\" : \"x\",\n \"a\": 1 }");
        let c = fingerprint("POST", "/v1/merchants", br#"{"a":2,"b":"x"}"#);
        let d = fingerprint("POST", "/v1/other", br#"{"a":1,"b":"x"}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn keys_must_be_printable_ascii_up_to_255() {
        assert!(validate_key("order-123").is_ok());
        assert!(validate_key(&"k".repeat(255)).is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(256)).is_err());
        assert!(validate_key("tab\there").is_err());
        assert!(validate_key("é").is_err());
    }

    #[test]
    fn sealed_responses_open_only_with_the_same_key() {
        let a = ResponseCipher([1; 32]);
        let b = ResponseCipher([2; 32]);
        let sealed = a.seal(b"{\"api_key\":\"sk_x\"}").unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"sk_x"));
        assert_eq!(a.open(&sealed).unwrap(), b"{\"api_key\":\"sk_x\"}");
        assert!(b.open(&sealed).is_none());
        assert!(a.open(&sealed[..5]).is_none());
    }
}
