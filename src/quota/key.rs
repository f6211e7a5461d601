//! API keys, their hashed ids and their shards. The plaintext never leaves this type.

use std::fmt;

use base64::Engine as _;
use rand::Rng;
use sha2::{Digest, Sha256};

/// A plaintext API key as presented by an end user. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// A new key: `qk_` + 192 random bits, URL-safe base64 without padding.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        ApiKey(format!(
            "qk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// A caller-supplied key: 16–256 characters in 0x21–0x7E.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (16..=256).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
        ok.then(|| ApiKey(s.to_owned()))
    }

    /// A key as presented on a request: anything non-empty is looked up.
    /// Keys outside the creation rules can never exist, so they simply do not match.
    pub fn presented(s: &str) -> Option<Self> {
        (!s.is_empty()).then(|| ApiKey(s.to_owned()))
    }

    /// The plaintext, to hand back once at creation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key's id: hex of the first 16 bytes of SHA-256(key).
    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.0.as_bytes());
        KeyId(hex::encode(&digest[..16]))
    }
}

/// Lowercase hex of the first 16 bytes of SHA-256(key): 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Parses an id given by an admin; only 32 lowercase hex characters are ids.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| KeyId(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard of this key: big-endian u32 of the first 4 digest bytes mod `shards`.
    /// The id starts with those bytes, so the shard is known from the id alone.
    pub fn shard(&self, shards: u32) -> Shard {
        let prefix = u32::from_str_radix(&self.0[..8], 16)
            .expect("a KeyId is 32 hex characters by construction");
        Shard(prefix % shards)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of the S shards a deployment spreads keys over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(pub u32);

impl Shard {
    /// The Redis hash tag, `{q007}`: every key of one shard lands in one slot.
    pub fn tag(&self) -> String {
        format!("{{q{:03}}}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_first_16_bytes_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        let id = ApiKey("abc".into()).id();
        assert_eq!(id.as_str(), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(id.shard(64), Shard(0xba7816bf % 64));
        assert_eq!(Shard(7).tag(), "{q007}");
    }

    #[test]
    fn generated_keys_are_long_and_url_safe() {
        let k = ApiKey::generate();
        assert!(k.expose().starts_with("qk_"));
        assert!(k.expose().len() >= 3 + 22);
        assert!(ApiKey::parse(k.expose()).is_some());
        assert_ne!(k, ApiKey::generate());
    }

    #[test]
    fn supplied_keys_follow_the_rules() {
        assert!(ApiKey::parse("short").is_none());
        assert!(ApiKey::parse("has space in the key!").is_none());
        assert!(ApiKey::parse(&"x".repeat(257)).is_none());
        assert!(ApiKey::parse(&"x".repeat(16)).is_some());
        assert_eq!(format!("{:?}", ApiKey::generate()), "ApiKey(<redacted>)");
    }

    #[test]
    fn key_ids_are_lowercase_hex() {
        assert!(KeyId::parse("BA7816BF8F01CFEA414140DE5DAE2223").is_none());
        assert!(KeyId::parse("ba7816bf8f01cfea414140de5dae222").is_none());
        assert!(KeyId::parse("ba7816bf8f01cfea414140de5dae2223").is_some());
    }
}
