//! Merchants and their API keys.
//!
//! An API key is shown once, at issue, and stored only as its SHA-256 hash: keys are
//! 256-bit random strings, so a plain hash is enough (no password stretching needed)
//! and lets the store look a key up by its hash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sesame_adapters::money::Currency;
use sha2::{Digest, Sha256};

use super::UnixMillis;
use super::ids::{MerchantId, base32, random_bytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    Active,
    Suspended,
}

/// A merchant as stored. `webhook_secret` signs merchant webhooks (never logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    pub name_zh: Option<String>,
    pub name_pt: Option<String>,
    pub city: String,
    pub country: String,
    pub mcc: String,
    pub currency: Currency,
    pub notify_url: Option<String>,
    pub webhook_secret: String,
    /// Merchant discount rate in basis points per wallet brand.
    #[serde(default)]
    pub fees_bps: BTreeMap<String, u32>,
    pub status: MerchantStatus,
    pub created_at: UnixMillis,
}

impl std::fmt::Debug for Merchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merchant")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("currency", &self.currency)
            .field("status", &self.status)
            .field("webhook_secret", &"***")
            .finish_non_exhaustive()
    }
}

/// Validated input for a new merchant (see `services::merchants`).
#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub name: String,
    pub name_zh: Option<String>,
    pub name_pt: Option<String>,
    pub city: String,
    pub country: String,
    pub mcc: String,
    pub currency: Currency,
    pub notify_url: Option<String>,
}

/// A freshly issued API key in clear text. Exists only between issue and response.
pub struct ApiKey(String);

impl ApiKey {
    pub const PREFIX: &'static str = "sk_";

    pub fn generate() -> ApiKey {
        ApiKey(format!("{}{}", Self::PREFIX, base32(&random_bytes::<32>())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of a presented key string, for lookup.
    pub fn hash_of(presented: &str) -> String {
        hex::encode(Sha256::digest(presented.as_bytes()))
    }

    pub fn record(&self, now: UnixMillis) -> ApiKeyRecord {
        ApiKeyRecord {
            hash: Self::hash_of(&self.0),
            prefix: self.0.chars().take(10).collect(),
            created_at: now,
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// What the store keeps of an API key: its hash and a display prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub hash: String,
    pub prefix: String,
    pub created_at: UnixMillis,
}
