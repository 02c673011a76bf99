//! Plate tokens: what a plate URL carries (`/q/{token}`).
//!
//! token = base64url( plate id bytes (12, random) || HMAC-SHA256(key, "plate:v1" || id)[..8] ).
//! The 96 random bits make a token unguessable; the 64-bit MAC lets the gateway reject a
//! made-up or altered token before any store lookup, so scanning random tokens cannot
//! load the store. The key lives in the store (`Store::secret`), shared by every gateway.
//! Must never: accept a token whose MAC does not verify in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::PlateId;

const MAC_LEN: usize = 8;
const DOMAIN: &[u8] = b"plate:v1";
/// Length of every valid token in characters: base64url of 20 bytes.
pub const TOKEN_LEN: usize = 27;

#[derive(Clone)]
pub struct PlateTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PlateTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlateTokens(***)")
    }
}

impl PlateTokens {
    pub fn new(key: &[u8]) -> PlateTokens {
        PlateTokens { key: key.to_vec() }
    }

    fn mac(&self, id: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(DOMAIN);
        mac.update(id);
        mac
    }

    pub fn token_for(&self, plate: &PlateId) -> String {
        let id = plate.to_bytes();
        let tag = self.mac(&id).finalize().into_bytes();
        let mut raw = Vec::with_capacity(id.len() + MAC_LEN);
        raw.extend_from_slice(&id);
        raw.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The plate id a token names, or `None` for anything not issued with our key.
    pub fn verify(&self, token: &str) -> Option<PlateId> {
        if token.len() != TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (id, tag) = raw.split_at_checked(PlateId::BYTES)?;
        self.mac(id).verify_truncated_left(tag).ok()?;
        let id: [u8; 12] = id.try_into().ok()?;
        Some(PlateId::from_bytes(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_verifies_to_its_plate() {
        let tokens = PlateTokens::new(b"k1");
        let plate = PlateId::generate();
        let token = tokens.token_for(&plate);
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(tokens.verify(&token), Some(plate));
    }

    #[test]
    fn forged_or_altered_tokens_are_rejected() {
        let tokens = PlateTokens::new(b"k1");
        let plate = PlateId::generate();
        let token = tokens.token_for(&plate);
        assert_eq!(PlateTokens::new(b"k2").verify(&token), None);
        let mut chars: Vec<char> = token.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        assert_eq!(tokens.verify(&altered), None);
        for bad in [
            "",
            "short",
            &"A".repeat(TOKEN_LEN),
            &format!("{token}x"),
            "../../../etc/passwd/aaaaaaa",
        ] {
            assert_eq!(tokens.verify(bad), None, "{bad}");
        }
    }
}
