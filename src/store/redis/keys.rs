//! Every Redis key the store uses, and nothing else: the ONE place keys are built.
//!
//! Merchant-scoped keys all carry the hash tag `{m:<merchant id>}`, so every
//! multi-key script over one merchant lands on one Redis Cluster slot. Global index
//! keys carry no tag and are only ever touched one key per command.
//! Must never: put a caller-supplied string inside a key unhashed unless its shape is
//! known (ids are validated on parse; idempotency keys are SHA-256 hashed), and never
//! let a prefix contain `{` or `}` (it would replace the merchant hash tag).

use sha2::{Digest, Sha256};

use crate::domain::{MerchantId, OrderId, PlateId};

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

    /// Hash: order id -> order JSON.
    pub fn orders(&self, merchant: &MerchantId) -> String {
        format!("{}:orders", self.scoped(merchant))
    }

    /// Hash: order id -> stored version (decimal), the compare-and-set field.
    pub fn order_versions(&self, merchant: &MerchantId) -> String {
        format!("{}:order-versions", self.scoped(merchant))
    }

    /// Sorted set of order ids scored by `created_at`. Ids of one merchant are
    /// fixed-length lower-case base32 in ASCII order, so a reverse range is exactly
    /// newest first with ties by id descending.
    pub fn orders_by_created(&self, merchant: &MerchantId) -> String {
        format!("{}:orders-by-created", self.scoped(merchant))
    }

    /// Sorted set of the open orders with a next check, scored by `next_check_at`.
    pub fn orders_due(&self, merchant: &MerchantId) -> String {
        format!("{}:orders-due", self.scoped(merchant))
    }

    /// Marker set while this merchant may be missing from the global due-merchants
    /// set (see the retire protocol in `payments`).
    pub fn orders_due_off(&self, merchant: &MerchantId) -> String {
        format!("{}:orders-due-off", self.scoped(merchant))
    }

    /// Set of the dedupe keys of applied changes (kept forever).
    pub fn dedupe(&self, merchant: &MerchantId) -> String {
        format!("{}:dedupe", self.scoped(merchant))
    }

    /// Hash: refund id -> refund JSON.
    pub fn refunds(&self, merchant: &MerchantId) -> String {
        format!("{}:refunds", self.scoped(merchant))
    }

    /// List of one order's refund ids in creation order.
    pub fn order_refunds(&self, order: &OrderId) -> String {
        format!(
            "{}:order-refunds:{}",
            self.scoped(&order.merchant()),
            order.as_str()
        )
    }

    /// Hash: ledger entry id -> entry JSON. Entry ids are hash fields, never key parts.
    pub fn entries(&self, merchant: &MerchantId) -> String {
        format!("{}:entries", self.scoped(merchant))
    }

    /// List of every ledger entry id of the merchant in posting order.
    pub fn ledger(&self, merchant: &MerchantId) -> String {
        format!("{}:ledger", self.scoped(merchant))
    }

    /// List of one order's ledger entry ids in posting order.
    pub fn order_entries(&self, order: &OrderId) -> String {
        format!(
            "{}:order-entries:{}",
            self.scoped(&order.merchant()),
            order.as_str()
        )
    }

    /// Hash: `<currency code>|<account>` -> balance in minor units (HINCRBY).
    pub fn balances(&self, merchant: &MerchantId) -> String {
        format!("{}:balances", self.scoped(merchant))
    }

    /// Hash: event id -> event JSON.
    pub fn events(&self, merchant: &MerchantId) -> String {
        format!("{}:events", self.scoped(merchant))
    }

    /// Counter giving each new event of the merchant its sequence number.
    pub fn event_seq(&self, merchant: &MerchantId) -> String {
        format!("{}:event-seq", self.scoped(merchant))
    }

    /// Sorted set of event ids scored by sequence number: creation order.
    pub fn events_by_seq(&self, merchant: &MerchantId) -> String {
        format!("{}:events-by-seq", self.scoped(merchant))
    }

    /// Hash of delivery state, fields `<event id>:<name>` for `state`, `attempts`,
    /// `next`, `lease`, `lease_until`, `error`.
    pub fn outbox(&self, merchant: &MerchantId) -> String {
        format!("{}:outbox", self.scoped(merchant))
    }

    /// Sorted set of the pending event ids scored by when each may next be claimed
    /// (its due time, or its lease expiry while leased).
    pub fn outbox_due(&self, merchant: &MerchantId) -> String {
        format!("{}:outbox-due", self.scoped(merchant))
    }

    /// Marker set while this merchant may be missing from the global outbox-merchants
    /// set (see the retire protocol in `payments`).
    pub fn outbox_off(&self, merchant: &MerchantId) -> String {
        format!("{}:outbox-off", self.scoped(merchant))
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

    /// Global set of merchants that may have open orders due for a check. Written
    /// ahead of the merchant's commit; retired lazily when their due set is empty.
    pub fn due_merchants(&self) -> String {
        format!("{}due-merchants", self.prefix)
    }

    /// Global set of merchants that may have pending outbox events. Written ahead of
    /// the merchant's commit or resend; retired lazily when their outbox is empty.
    pub fn outbox_merchants(&self) -> String {
        format!("{}outbox-merchants", self.prefix)
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
        let o = OrderId::generate_for(&m);
        let tag = format!("{{m:{m}}}");
        for key in [
            keys.merchant(&m),
            keys.plates(&m),
            keys.plate(&m, &p),
            keys.api_key(&m),
            keys.merchant_idem(&m, "a}{b"),
            keys.orders(&m),
            keys.order_versions(&m),
            keys.orders_by_created(&m),
            keys.orders_due(&m),
            keys.orders_due_off(&m),
            keys.dedupe(&m),
            keys.refunds(&m),
            keys.order_refunds(&o),
            keys.entries(&m),
            keys.ledger(&m),
            keys.order_entries(&o),
            keys.balances(&m),
            keys.events(&m),
            keys.event_seq(&m),
            keys.events_by_seq(&m),
            keys.outbox(&m),
            keys.outbox_due(&m),
            keys.outbox_off(&m),
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
            keys.due_merchants(),
            keys.outbox_merchants(),
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
