//! Scaffolding shared by Keygate's benchmarks: sizes from the environment, the load average
//! printed beside every figure, percentiles, and large key sets built the same way everywhere.

use keygate_protocol::KeyId;
use keygate_protocol::key::{self, KeyFormatError};
use keygate_protocol::wire::KeyEntry;

/// `name` from the environment as a number, or `default` when unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg` (`"unknown"` elsewhere).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The `p`-quantile (0.0–1.0, nearest rank) of sorted samples; 0 when there are none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize]
}

/// Median and 99th percentile of unsorted samples.
pub fn median_p99(mut samples: Vec<u64>) -> (u64, u64) {
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// A generated key set: its entries and some of its secrets.
#[derive(Debug)]
pub struct BenchKeys {
    /// One entry per key, in generation order.
    pub entries: Vec<KeyEntry>,
    /// `(secret, index)` of the keys `keep` selected.
    pub secrets: Vec<(String, usize)>,
}

/// Generates `n` fresh `kg_live` keys. Entry `i` has the key id `i` (big-endian in the first 8
/// bytes), owner `owner-{i % 1000}`, no expiry, no scopes and no resources until `shape`
/// changes them; the secrets of the indices `keep` selects are returned.
///
/// # Errors
/// Only if key generation fails (it cannot for a valid prefix).
pub fn key_set(
    n: usize,
    mut shape: impl FnMut(usize, &mut KeyEntry),
    keep: impl Fn(usize) -> bool,
) -> Result<BenchKeys, KeyFormatError> {
    let mut entries = Vec::with_capacity(n);
    let mut secrets = Vec::new();
    for i in 0..n {
        let k = key::generate("kg_live")?;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let mut entry = KeyEntry {
            policy: Default::default(),
            digest: k.digest(),
            key_id: KeyId::from_bytes(id),
            owner: format!("owner-{}", i % 1000),
            expires_at: None,
            scopes: Vec::new(),
            resources: Vec::new(),
        };
        shape(i, &mut entry);
        entries.push(entry);
        if keep(i) {
            secrets.push((k.expose_secret().to_owned(), i));
        }
    }
    Ok(BenchKeys { entries, secrets })
}

/// The filter benches' key set: [`key_set`] of `n` keys, each with the scopes `repo:read` and
/// `repo:write` (even indices) or `admin` (odd), and the one resource `org{i % 100}`; the
/// secrets of [`every_thousandth`] key are kept.
///
/// # Errors
/// As [`key_set`].
pub fn repo_key_set(n: usize) -> Result<BenchKeys, KeyFormatError> {
    key_set(
        n,
        |i, e| {
            e.scopes = vec![
                "repo:read".into(),
                if i % 2 == 0 { "repo:write" } else { "admin" }.into(),
            ];
            e.resources = vec![format!("org{}", i % 100)];
        },
        every_thousandth(n),
    )
}

/// Every `n / 1000`-th index (about 1,000 samples of a set of `n`).
pub fn every_thousandth(n: usize) -> impl Fn(usize) -> bool {
    let step = (n / 1000).max(1);
    move |i| i % step == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_protocol::key;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(median_p99(vec![5, 1, 3]), (3, 5));
    }

    #[test]
    fn key_sets_hold_working_secrets_and_the_shape() {
        let keys = key_set(
            2000,
            |i, e| e.scopes = vec![format!("s{}", i % 2)],
            every_thousandth(2000),
        )
        .unwrap();
        assert_eq!(keys.entries.len(), 2000);
        assert_eq!(
            keys.secrets.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
            (0..2000).step_by(2).collect::<Vec<_>>()
        );
        for (secret, i) in &keys.secrets {
            let parsed = key::parse(secret).unwrap();
            assert_eq!(parsed.digest(), keys.entries[*i].digest);
            assert_eq!(keys.entries[*i].scopes, vec![format!("s{}", i % 2)]);
            assert_eq!(keys.entries[*i].owner, format!("owner-{}", i % 1000));
        }
    }
}
