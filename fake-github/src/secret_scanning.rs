//! GitHub's secret scanning partner alerts, as GitHub documents them ("Secret scanning partner
//! program"): the signer (ECDSA P-256 / SHA-256 over an alert's raw body, the DER signature in
//! base64 as `Github-Public-Key-Signature`, the key's identifier as
//! `Github-Public-Key-Identifier`) and `GET /meta/public_keys/secret_scanning`, which publishes
//! the public keys as `{public_keys: [{key_identifier, key, is_current}]}`. The keys are the
//! test-only fixtures `secret-scanning-*.pkcs8.pem` (see `fixtures/README.md`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::fixtures::fixture;
use crate::state::Shared;
use crate::{FakeGithub, Operation};

/// The older published key (`is_current: false`).
pub const KEY_1: &str = "secret-scanning-key-1";
/// The current published key, the one [`FakeGithub::sign_alert`] signs with.
pub const KEY_2: &str = "secret-scanning-key-2";
/// A key GitHub does not publish until [`FakeGithub::publish_alert_key`] adds it.
pub const OTHER: &str = "secret-scanning-other";

fn signing_key(name: &str) -> SigningKey {
    SigningKey::from_pkcs8_pem(&fixture(&format!("{name}.pkcs8.pem")))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A key's identifier: the SHA-256 (hex) of its SubjectPublicKeyInfo DER, 64 hex characters as
/// GitHub's are.
pub fn key_identifier(name: &str) -> String {
    let der = signing_key(name)
        .verifying_key()
        .to_public_key_der()
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let digest = sha2::Sha256::digest(der.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(Github-Public-Key-Identifier, Github-Public-Key-Signature)` for `body` signed with the
/// fixture key `name`.
pub fn sign_with(name: &str, body: &[u8]) -> (String, String) {
    let sig: DerSignature = signing_key(name).sign(body);
    (key_identifier(name), STANDARD.encode(sig.as_bytes()))
}

/// `GET /meta/public_keys/secret_scanning`.
pub(crate) async fn public_keys(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let (published, current) = {
        let g = shared.lock();
        (g.alert_keys.clone(), g.alert_key_current)
    };
    let keys: Vec<Value> = published
        .iter()
        .map(|name| {
            json!({
                "key_identifier": key_identifier(name),
                "key": fixture(&format!("{name}.pub.pem")),
                "is_current": *name == current,
            })
        })
        .collect();
    Json(json!({ "public_keys": keys }))
}

impl FakeGithub {
    /// The URL of the published keys (`<api base>/meta/public_keys/secret_scanning`).
    pub fn alert_keys_url(&self) -> String {
        format!("{}/meta/public_keys/secret_scanning", self.shared.api_base)
    }

    /// Signs `body` with the current key: `(identifier, signature)`, the two headers' values.
    pub fn sign_alert(&self, body: &[u8]) -> (String, String) {
        let current = self.shared.lock().alert_key_current;
        sign_with(current, body)
    }

    /// Publishes [`OTHER`] as the new current key (GitHub rotating its signing key).
    pub fn publish_alert_key(&self) {
        let mut g = self.shared.lock();
        if !g.alert_keys.contains(&OTHER) {
            g.alert_keys.push(OTHER);
        }
        g.alert_key_current = OTHER;
    }

    /// How many times the public keys were fetched.
    pub fn alert_key_fetches(&self) -> u64 {
        self.shared
            .lock()
            .calls
            .get(&Operation::GetSecretScanningPublicKeys)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::{DerSignature, VerifyingKey};
    use p256::pkcs8::DecodePublicKey;

    use super::*;

    #[test]
    fn signatures_verify_with_the_published_key_only() {
        let body = br#"[{"token":"t","type":"x","url":"","source":"content"}]"#;
        let (id, sig) = sign_with(KEY_2, body);
        assert_eq!(id.len(), 64);
        assert_ne!(id, key_identifier(KEY_1));
        let der = DerSignature::from_bytes(&STANDARD.decode(sig).unwrap()).unwrap();
        let key2 =
            VerifyingKey::from_public_key_pem(&fixture("secret-scanning-key-2.pub.pem")).unwrap();
        let key1 =
            VerifyingKey::from_public_key_pem(&fixture("secret-scanning-key-1.pub.pem")).unwrap();
        assert!(key2.verify(body, &der).is_ok());
        assert!(key1.verify(body, &der).is_err());
        assert!(key2.verify(b"[]", &der).is_err());
    }
}
