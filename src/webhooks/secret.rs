//! Endpoint signing secrets: made, sealed at rest, and used to sign.
//!
//! A secret is `whsec_` and the base64 of 32 random bytes (the Standard
//! Webhooks form, which receivers' libraries read). The database holds it
//! sealed with AES-256-GCM under a key derived (HKDF-SHA256, RFC 5869) from
//! `SKUWATCH_WEBHOOK_SECRET_KEY`, or from `SKUWATCH_JWT_SECRET` when that is
//! not set, with the endpoint id as associated data (a sealed secret copied
//! to another endpoint's row does not open). A database dump alone does
//! not give the secrets away.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// The sealed form's version tag.
const SEALED_PREFIX: &str = "v1:";
/// HKDF's `info`: this key is for webhook secrets and nothing else.
const KEY_LABEL: &[u8] = b"skuwatch webhook secrets v1";
const NONCE_BYTES: usize = 12;

/// A new endpoint secret.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    format!("whsec_{}", BASE64.encode(bytes))
}

/// Seals and opens secrets for storage.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A sealed secret that does not open: the key changed (or the row was
/// altered). The endpoint needs a new secret (rotate it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the endpoint's secret cannot be read with this server's key (was SKUWATCH_WEBHOOK_SECRET_KEY changed?); rotate the secret")]
pub struct Unreadable;

impl Sealer {
    /// A sealer whose key is derived from `material` (a setting's bytes).
    pub fn from_material(material: &[u8]) -> Self {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, material);
        let mut key = [0u8; 32];
        hkdf.expand(KEY_LABEL, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// `v1:` and the base64 of nonce and ciphertext.
    pub fn seal(&self, endpoint: &str, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the system's random source");
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: endpoint.as_bytes(),
                },
            )
            .expect("AES-GCM seals any message this short");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", BASE64.encode(out))
    }

    pub fn open(&self, endpoint: &str, sealed: &str) -> Result<String, Unreadable> {
        let raw = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b64| BASE64.decode(b64).ok())
            .filter(|raw| raw.len() > NONCE_BYTES)
            .ok_or(Unreadable)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: endpoint.as_bytes(),
                },
            )
            .map_err(|_| Unreadable)?;
        String::from_utf8(plain).map_err(|_| Unreadable)
    }
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">` for each secret, space-separated (Standard
/// Webhooks, "Signature scheme"; several during a rotation). Signed by the
/// specification's own Rust library.
pub fn signature(
    secrets: &[String],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, standardwebhooks::WebhookError> {
    let mut out = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let webhook = standardwebhooks::Webhook::new(secret)?;
        out.push(webhook.sign(message_id, timestamp, body)?);
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_and_endpoint_only() {
        let sealer = Sealer::from_material(b"a key of at least thirty-two bytes!");
        let secret = generate();
        assert!(secret.starts_with("whsec_"));
        let sealed = sealer.seal("e1", &secret);
        assert!(!sealed.contains(&secret[6..]));
        assert_eq!(sealer.open("e1", &sealed).unwrap(), secret);
        assert_eq!(sealer.open("e2", &sealed), Err(Unreadable));
        let other = Sealer::from_material(b"another key of thirty-two bytes!!!");
        assert_eq!(other.open("e1", &sealed), Err(Unreadable));
        assert_eq!(sealer.open("e1", "v1:bm9wZQ=="), Err(Unreadable));
    }

    /// The specification's example (standard-webhooks, spec "Signature
    /// scheme"): a known secret, id, timestamp and body give this signature.
    #[test]
    fn signs_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned();
        let body = br#"{"test": 2432232314}"#;
        let header = signature(
            std::slice::from_ref(&secret),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        )
        .unwrap();
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature(
            &[secret.clone(), secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        )
        .unwrap();
        assert_eq!(two.split(' ').count(), 2);
    }
}
