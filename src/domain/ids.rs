//! Identifiers: random, prefixed, validated on parse.
//!
//! A merchant id is `m_` + 16 Crockford base32 characters (80 random bits);
//! a plate id is `pl_` + 20 characters (the 12 random bytes a plate token carries).
//! Parsing checks the exact shape, so an id from a URL can be used in a store key
//! without further escaping.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Base32 (Crockford alphabet, lower case, no padding) of `bytes`.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Inverse of [`base32`] for exactly `len` bytes; `None` on any other input.
pub fn base32_decode(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != (len * 8).div_ceil(5) {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, so every id has exactly one spelling.
    (out.len() == len && buffer == 0).then_some(out)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $bytes:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            pub const BYTES: usize = $bytes;

            pub fn generate() -> Self {
                Self::from_bytes(&random_bytes::<$bytes>())
            }

            pub fn from_bytes(bytes: &[u8; $bytes]) -> Self {
                $name(format!("{}{}", $prefix, base32(bytes)))
            }

            pub fn parse(text: &str) -> Option<Self> {
                let body = text.strip_prefix($prefix)?;
                base32_decode(body, $bytes)?;
                Some($name(text.to_owned()))
            }

            pub fn to_bytes(&self) -> [u8; $bytes] {
                let mut out = [0u8; $bytes];
                if let Some(decoded) = base32_decode(&self.0[$prefix.len()..], $bytes) {
                    out.copy_from_slice(&decoded);
                }
                out
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s)
                    .ok_or_else(|| serde::de::Error::custom(concat!("invalid ", stringify!($name))))
            }
        }
    };
}

prefixed_id!(MerchantId, "m_", 10);
prefixed_id!(PlateId, "pl_", 12);
prefixed_id!(OrderId, "o_", 18);
prefixed_id!(RefundId, "r_", 18);
prefixed_id!(EventId, "evt_", 12);

/// Orders and refunds carry their merchant in their id (10 merchant bytes + 8 random
/// bytes, 31 characters: within every wallet's merchant order number limit). A wallet
/// callback names only our id, so the merchant — and with it the store partition — is
/// known without a global index.
macro_rules! merchant_scoped_id {
    ($name:ident) => {
        impl $name {
            pub fn generate_for(merchant: &MerchantId) -> Self {
                let mut bytes = [0u8; 18];
                bytes[..10].copy_from_slice(&merchant.to_bytes());
                bytes[10..].copy_from_slice(&random_bytes::<8>());
                Self::from_bytes(&bytes)
            }

            pub fn merchant(&self) -> MerchantId {
                let bytes = self.to_bytes();
                let mut merchant = [0u8; 10];
                merchant.copy_from_slice(&bytes[..10]);
                MerchantId::from_bytes(&merchant)
            }
        }
    };
}

merchant_scoped_id!(OrderId);
merchant_scoped_id!(RefundId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_shapes() {
        let id = MerchantId::generate();
        assert_eq!(id.as_str().len(), 18);
        assert_eq!(MerchantId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(MerchantId::from_bytes(&id.to_bytes()), id);
        let plate = PlateId::generate();
        assert_eq!(plate.as_str().len(), 23);
        assert_eq!(PlateId::parse(plate.as_str()), Some(plate));
        for bad in [
            "",
            "m_",
            "m_0123456789abcdeF",
            "x_0123456789abcdef",
            "m_0123456789abcdefg",
            "m_0123456789abcdeu",
            "m_../../etc/passw",
        ] {
            assert!(MerchantId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn order_and_refund_ids_name_their_merchant_and_fit_wallet_limits() {
        let merchant = MerchantId::generate();
        let order = OrderId::generate_for(&merchant);
        assert_eq!(order.merchant(), merchant);
        assert!(order.as_str().len() <= 32, "{order}");
        assert!(
            order
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        );
        let refund = RefundId::generate_for(&merchant);
        assert_eq!(refund.merchant(), merchant);
        assert_ne!(OrderId::generate_for(&merchant), order);
        assert!(OrderId::parse(refund.as_str()).is_none());
    }

    #[test]
    fn base32_has_one_spelling_per_value() {
        let bytes = [0xffu8; 12];
        let text = base32(&bytes);
        assert_eq!(base32_decode(&text, 12).unwrap(), bytes);
        // Same length, non-zero trailing bits: rejected.
        let mut other = text.clone();
        other.pop();
        other.push('z');
        assert!(text.ends_with('w') || base32_decode(&other, 12).is_none());
    }
}
