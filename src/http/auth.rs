//! The admin bearer token, compared in constant time.

use base64::Engine as _;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::extract::bearer;
use super::ApiError;

/// The admin token. `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken {
    /// SHA-256 of the token: comparing digests takes the same time for any length.
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token that accepts exactly `token`.
    pub fn new(token: &str) -> Self {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// A fresh random token (256 bits), returned with its plaintext to show once.
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let plain = format!(
            "qa_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        (AdminToken::new(&plain), plain)
    }

    /// Whether `presented` is the token, in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }

    /// `Ok` when the request carries `Authorization: Bearer <this token>`.
    pub fn require(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers.get(AUTHORIZATION).and_then(bearer);
        match presented {
            Some(token) if self.verify(&token) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let (token, plain) = AdminToken::generate();
        assert!(token.verify(&plain));
        assert!(!token.verify(&plain[..plain.len() - 1]));
        assert!(!token.verify(""));
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {plain}").parse().unwrap());
        assert!(token.require(&headers).is_ok());
        headers.insert(AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(token.require(&headers).is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }
}
