//! GitHub secret scanning alerts: the settings (where GitHub publishes its signing keys, what a
//! leak does) and the signature check. An alert is signed with ECDSA P-256 / SHA-256 over its
//! raw body, the DER signature in base64 (`Github-Public-Key-Signature`), by the key named in
//! `Github-Public-Key-Identifier`, one of those GitHub publishes as
//! `{public_keys: [{key_identifier, key, is_current}]}`. The keys are cached and fetched again
//! when an alert names one not in the cache (GitHub rotated), at most once a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

use crate::domain::leaks::LeakPolicy;

/// Least time between two fetches of the keys.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// `keygate serve`'s secret scanning settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretScanningArgs {
    /// Where GitHub publishes its secret scanning signing keys (GitHub Enterprise Server:
    /// `https://<host>/api/v3/meta/public_keys/secret_scanning`).
    #[arg(
        long,
        env = "KEYGATE_SECRET_SCANNING_KEYS_URL",
        default_value = "https://api.github.com/meta/public_keys/secret_scanning"
    )]
    pub secret_scanning_keys_url: String,
    /// What a reported leak of a live key does: revoke it (and its children), suspend them, or
    /// only notify (audit and a `key.leaked` event).
    #[arg(long, env = "KEYGATE_SECRET_SCANNING_POLICY", value_enum, default_value_t = LeakPolicy::Revoke)]
    pub secret_scanning_policy: LeakPolicy,
}

impl Default for SecretScanningArgs {
    fn default() -> Self {
        Self {
            secret_scanning_keys_url: "https://api.github.com/meta/public_keys/secret_scanning"
                .into(),
            secret_scanning_policy: LeakPolicy::Revoke,
        }
    }
}

/// Why an alert's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AlertAuthError {
    /// A header is missing or the signature is not base64 DER.
    #[error(
        "the alert is not signed: Github-Public-Key-Identifier and a base64 DER Github-Public-Key-Signature are required"
    )]
    Unsigned,
    /// GitHub does not publish this key (after a fresh fetch).
    #[error("GitHub publishes no secret scanning key with this identifier")]
    UnknownKey,
    /// The signature does not verify over the body.
    #[error("the signature does not match the body")]
    BadSignature,
    /// The keys could not be fetched.
    #[error("GitHub's secret scanning keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

#[derive(Deserialize)]
struct PublishedKeys {
    public_keys: Vec<PublishedKey>,
}

#[derive(Deserialize)]
struct PublishedKey {
    key_identifier: String,
    key: String,
}

/// GitHub's keys, cached.
#[derive(Debug)]
pub struct AlertVerifier {
    url: String,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<(HashMap<String, VerifyingKey>, Option<Instant>)>,
}

impl AlertVerifier {
    /// A verifier fetching from `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            cache: tokio::sync::Mutex::new((HashMap::new(), None)),
        }
    }

    /// Checks that `signature` (base64 DER) signs `body` with GitHub's key `identifier`.
    ///
    /// # Errors
    /// See [`AlertAuthError`].
    pub async fn verify(
        &self,
        identifier: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<(), AlertAuthError> {
        let der = STANDARD
            .decode(signature.trim())
            .map_err(|_| AlertAuthError::Unsigned)?;
        let sig = DerSignature::from_bytes(&der).map_err(|_| AlertAuthError::Unsigned)?;
        let key = self.key(identifier).await?;
        key.verify(body, &sig)
            .map_err(|_| AlertAuthError::BadSignature)
    }

    async fn key(&self, identifier: &str) -> Result<VerifyingKey, AlertAuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(k) = cache.0.get(identifier) {
            return Ok(*k);
        }
        if cache.1.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
            return Err(AlertAuthError::UnknownKey);
        }
        cache.1 = Some(Instant::now());
        cache.0 = self.fetch().await?;
        cache
            .0
            .get(identifier)
            .copied()
            .ok_or(AlertAuthError::UnknownKey)
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, AlertAuthError> {
        let unavailable =
            |e: &dyn std::fmt::Display| AlertAuthError::KeysUnavailable(e.to_string());
        let resp = self
            .http
            .get(&self.url)
            .header("user-agent", "keygate")
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|e| unavailable(&e.without_url()))?;
        if !resp.status().is_success() {
            return Err(unavailable(&format_args!("status {}", resp.status())));
        }
        let published: PublishedKeys = resp
            .json()
            .await
            .map_err(|e| unavailable(&e.without_url()))?;
        let mut keys = HashMap::new();
        for k in published.public_keys {
            match VerifyingKey::from_public_key_pem(&k.key) {
                Ok(v) => {
                    keys.insert(k.key_identifier, v);
                }
                Err(e) => {
                    tracing::warn!(key = %k.key_identifier, error = %e, "unusable secret scanning key skipped")
                }
            }
        }
        Ok(keys)
    }
}
