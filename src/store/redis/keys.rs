//! Every Redis key the store uses, and nothing else: the ONE place keys are built.
//!
//! Merchant-scoped keys all carry the hash tag `{m:<merchant id>}`, so every
//! multi-key script over one merchant lands on one Redis Cluster slot. Global index
//! keys carry no tag and are only ever touched one key per command.
//! Must never: put a caller-supplied string inside a key unhashed unless its shape is
//! known (ids are validated on parse; idempotency keys are SHA-256 hashed), and never
//! let a prefix contain `{` or `}` (it would replace the merchant hash tag).

use sha2::{Digest, Sha256};

use crate::domain::{MerchantId, PlateId};

/// Key builder for one deployment's prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `None` when the prefix contains a hash-tag brace: Redis Cluster hashes the
    /// first `{...}` of a key, so such a prefix would pin every key to one slot.
    pub fn new(prefix: &str) -> Option<Keys> {
        if prefix.contains(['{', '}']) {
            return None;
        }
        Some(Keys {
            prefix: prefix.to_owned(),
        })
    }

    /// `<prefix>{m:<id>}`: the start of every key of this merchant.
    fn scoped(&self, merchant: &MerchantId) -> String {
        format!("{}{{m:{}}}", self.prefix, merchant.as_str())
    }

    /// The merchant record (JSON).
    pub fn merchant(&self, merchant: &MerchantId) -> String {
        format!("{}:merchant", self.scoped(merchant))
    }

    /// Sorted set of the merchant's plate ids, scored by `created_at`.
    pub fn plates(&self, merchant: &MerchantId) -> String {
        format!("{}:plates", self.scoped(merchant))
    }

    /// One plate record (JSON).
    pub fn plate(&self, merchant: &MerchantId, plate: &PlateId) -> String {
        format!("{}:plate:{}", self.scoped(merchant), plate.as_str())
    }

    /// Hash of the current API key: fields `hash` (hex SHA-256) and `record` (JSON).
    pub fn api_key(&self, merchant: &MerchantId) -> String {
        format!("{}:apikey", self.scoped(merchant))
    }

    /// An idempotency record of this merchant's API.
    pub fn merchant_idem(&self, merchant: &MerchantId, client_key: &str) -> String {
        format!("{}:idem:{}", self.scoped(merchant), hashed(client_key))
    }

    /// An idempotency record of the admin API.
    pub fn admin_idem(&self, client_key: &str) -> String {
        format!("{}idem:admin:{}", self.prefix, hashed(client_key))
    }

    /// Global sorted set of merchant ids scored by `created_at`. Redis orders equal
    /// scores by member bytes, and ids are fixed-length lower-case base32, so the
    /// set's order is exactly (created_at, id).
    pub fn merchants(&self) -> String {
        format!("{}merchants", self.prefix)
    }

    /// Global index: plate id -> owning merchant id.
    pub fn plate_owner(&self, plate: &PlateId) -> String {
        format!("{}plate-owner:{}", self.prefix, plate.as_str())
    }

    /// Global index: API key hash -> merchant id.
    pub fn api_key_owner(&self, key_hash: &str) -> String {
        format!("{}apikey:{}", self.prefix, key_hash)
    }

    /// A server-wide secret (raw bytes).
    pub fn secret(&self, name: &str) -> String {
        format!("{}secret:{}", self.prefix, name)
    }
}

/// Hex SHA-256: any client string becomes a fixed, brace-free key segment.
fn hashed(client_key: &str) -> String {
    hex::encode(Sha256::digest(client_key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_keys_share_one_hash_tag_and_globals_have_none() {
        let keys = Keys::new("p:").unwrap();
        let m = MerchantId::from_bytes(&[7; 10]);
        let p = PlateId::from_bytes(&[9; 12]);
        let tag = format!("{{m:{m}}}");
        for key in [
            keys.merchant(&m),
            keys.plates(&m),
            keys.plate(&m, &p),
            keys.api_key(&m),
            keys.merchant_idem(&m, "a}{b"),
        ] {
            assert!(key.starts_with(&format!("p:{tag}:")), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}");
        }
        for key in [
            keys.merchants(),
            keys.plate_owner(&p),
            keys.api_key_owner("ab"),
            keys.admin_idem("{x}"),
            keys.secret("plate"),
        ] {
            assert!(!key.contains('{'), "{key}");
        }
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(Keys::new("a{b}:").is_none());
        assert!(Keys::new("").is_some());
    }
}
