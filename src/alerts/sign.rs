//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//!
//! The key is the secret's base64, after an optional `whsec_`, decoded
//! ([`WebhookKey`], checked when the config is loaded).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::WebhookKey;

type HmacSha256 = Hmac<Sha256>;

/// A signing key, decoded once.
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

impl Signer {
    pub fn new(key: &WebhookKey) -> Self {
        Self {
            key: key.bytes().to_vec(),
        }
    }

    /// The `webhook-signature` header value for one request.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether a `webhook-signature` header (space-separated `v1,<sig>`
    /// entries) holds a valid signature; constant-time comparison.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|entry| {
            let Some(b64) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = STANDARD.decode(b64) else {
                return false;
            };
            let mut mac = self.mac();
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_reference_test_vector() {
        let s = signer(SECRET);
        assert_eq!(s.sign(ID, TS, BODY.as_bytes()), SIG);
        assert!(s.verify(ID, TS, BODY.as_bytes(), &format!("v1,bogus {SIG}")));
    }

    #[test]
    fn a_changed_body_id_or_time_does_not_verify() {
        let s = signer(SECRET);
        assert!(!s.verify(ID, TS, b"{\"test\": 1}", SIG));
        assert!(!s.verify("msg_other", TS, BODY.as_bytes(), SIG));
        assert!(!s.verify(ID, TS + 1, BODY.as_bytes(), SIG));
        assert!(!s.verify(ID, TS, BODY.as_bytes(), "v2,abc"));
    }

    fn signer(secret: &str) -> Signer {
        Signer::new(&WebhookKey::parse(secret).unwrap())
    }

    /// The prefix is optional, as in the libraries: both forms are the
    /// same key.
    #[test]
    fn whsec_and_plain_base64_are_the_same_key() {
        let plain = signer(SECRET.trim_start_matches("whsec_"));
        assert_eq!(plain.sign(ID, TS, BODY.as_bytes()), SIG);
        assert!(!format!("{plain:?}").contains("MfKQ"));
    }

    #[test]
    fn secrets_the_libraries_would_read_differently_are_refused() {
        for bad in [
            "not-base64",
            "whsec_not base64",
            "s3cret!",
            "whsec_c2VjcmV0",
        ] {
            let e = WebhookKey::parse(bad).unwrap_err();
            assert!(e.contains("openssl rand -base64 32"), "{bad}: {e}");
            assert!(!e.contains(bad), "the secret is not echoed: {e}");
        }
    }
}
