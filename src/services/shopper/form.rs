//! Form nonces: what a Pay (or cancel) form carries so the gateway can tell a form it
//! served from one a client made up, and a fresh one from a stale one.
//!
//! nonce = base32( issued_at (u64 seconds, big-endian) || 10 random bytes
//!                 || HMAC-SHA256(form key, subject || 0 || those 18 bytes)[..12] )
//! where `subject` names what the form is for (`plate:<id>`, `order:<id>`,
//! `cancel:<id>`), so a nonce served for one plate or order is worthless on another.
//! The form key is derived from the order-id secret in the store, so every gateway
//! sharing the store accepts every other's forms. The nonce also seeds a plate order's
//! id: the same submitted form is always the same order. Must never: accept a nonce
//! whose MAC does not verify in constant time, or one older than the form lifetime.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::ids::{base32, base32_decode, random_bytes};

const BODY_LEN: usize = 18;
const TAG_LEN: usize = 12;
const SEAL_LEN: usize = 16;
/// Clock skew tolerated between gateways for a form "issued in the future", seconds.
const SKEW_SECS: i64 = 60;

/// What a submitted nonce is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormCheck {
    Valid,
    /// Ours, but older than the form lifetime.
    Stale,
    /// Not ours (made up, altered, or served for another subject).
    Forged,
}

/// The key of form nonces, derived from a server secret.
pub struct FormKey([u8; 32]);

impl FormKey {
    pub fn derive(server_secret: &[u8]) -> FormKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(server_secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"sesame form nonce key v1");
        FormKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, subject: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(subject.as_bytes());
        mac.update(b"\0");
        mac.update(body);
        mac
    }

    /// A fresh nonce for `subject`, issued at `now_ms`.
    pub fn issue(&self, subject: &str, now_ms: i64) -> String {
        self.issue_with(subject, now_ms, random_bytes::<10>())
    }

    fn issue_with(&self, subject: &str, now_ms: i64, random: [u8; 10]) -> String {
        let secs = u64::try_from(now_ms.div_euclid(1000)).unwrap_or(0);
        let mut raw = Vec::with_capacity(BODY_LEN + TAG_LEN);
        raw.extend_from_slice(&secs.to_be_bytes());
        raw.extend_from_slice(&random);
        let tag = self.mac(subject, &raw).finalize().into_bytes();
        raw.extend_from_slice(&tag[..TAG_LEN]);
        base32(&raw)
    }

    /// Whether `nonce` was issued for `subject` within `ttl_secs` before `now_ms`.
    pub fn check(&self, subject: &str, nonce: &str, now_ms: i64, ttl_secs: i64) -> FormCheck {
        let Some(raw) = base32_decode(nonce, BODY_LEN + TAG_LEN) else {
            return FormCheck::Forged;
        };
        let (body, tag) = raw.split_at(BODY_LEN);
        if self.mac(subject, body).verify_truncated_left(tag).is_err() {
            return FormCheck::Forged;
        }
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&body[..8]);
        let issued = i64::try_from(u64::from_be_bytes(secs)).unwrap_or(i64::MAX);
        let age = now_ms.div_euclid(1000).saturating_sub(issued);
        if (-SKEW_SECS..=ttl_secs).contains(&age) {
            FormCheck::Valid
        } else {
            FormCheck::Stale
        }
    }
}

impl FormKey {
    /// A deterministic seal of `subject` (what a payer cookie carries): only the
    /// server can make one, and it names that subject alone.
    pub fn seal(&self, subject: &str) -> String {
        let tag = self.mac(subject, b"seal").finalize().into_bytes();
        base32(&tag[..SEAL_LEN])
    }

    /// Whether `value` is the seal of `subject` (compared in constant time).
    pub fn sealed(&self, subject: &str, value: &str) -> bool {
        base32_decode(value, SEAL_LEN).is_some_and(|raw| {
            self.mac(subject, b"seal")
                .verify_truncated_left(&raw)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_925_106_000;

    #[test]
    fn an_issued_nonce_is_valid_for_its_subject_until_it_is_stale() {
        let key = FormKey::derive(b"secret");
        let nonce = key.issue("plate:pl_1", NOW);
        assert_eq!(nonce.len(), 48);
        assert_eq!(key.check("plate:pl_1", &nonce, NOW, 1800), FormCheck::Valid);
        assert_eq!(
            key.check("plate:pl_1", &nonce, NOW + 1_800_000, 1800),
            FormCheck::Valid
        );
        assert_eq!(
            key.check("plate:pl_1", &nonce, NOW + 1_801_000, 1800),
            FormCheck::Stale
        );
        assert_eq!(
            key.check("plate:pl_1", &nonce, NOW - 61_000, 1800),
            FormCheck::Stale,
            "issued in the future beyond the tolerated skew"
        );
        assert_ne!(key.issue("plate:pl_1", NOW), nonce, "random part");
    }

    #[test]
    fn made_up_altered_or_foreign_nonces_are_forged() {
        let key = FormKey::derive(b"secret");
        let nonce = key.issue_with("plate:pl_1", NOW, [7; 10]);
        assert_eq!(
            key.check("plate:pl_2", &nonce, NOW, 1800),
            FormCheck::Forged
        );
        assert_eq!(
            FormKey::derive(b"other").check("plate:pl_1", &nonce, NOW, 1800),
            FormCheck::Forged
        );
        let mut altered = nonce.clone().into_bytes();
        altered[3] = if altered[3] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(
            key.check("plate:pl_1", &altered, NOW, 1800),
            FormCheck::Forged
        );
        for junk in [
            "",
            "abc",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &"0".repeat(48),
        ] {
            assert_eq!(
                key.check("plate:pl_1", junk, NOW, 1800),
                FormCheck::Forged,
                "{junk}"
            );
        }
    }

    #[test]
    fn a_seal_names_its_subject_only_and_cannot_be_made_up() {
        let key = FormKey::derive(b"secret");
        let seal = key.seal("payer:or_1");
        assert_eq!(seal, key.seal("payer:or_1"), "deterministic");
        assert!(key.sealed("payer:or_1", &seal));
        assert!(!key.sealed("payer:or_2", &seal));
        assert!(!FormKey::derive(b"other").sealed("payer:or_1", &seal));
        assert!(!key.sealed("payer:or_1", ""));
        assert!(!key.sealed("payer:or_1", &"a".repeat(seal.len())));
        assert!(!key.sealed("payer:or_1", &format!("{seal}a")));
    }
}
