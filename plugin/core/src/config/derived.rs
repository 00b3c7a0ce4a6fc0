//! Values derived from a valid configuration: the tick period, a key-set call's timeout, and why
//! the filter cannot call the control plane when the edge key is missing.

use super::Config;

impl Config {
    /// Tick period of the per-worker timer, in milliseconds: frequent enough that followers
    /// pick up a published revision quickly, and that usage and sync deadlines are met.
    pub fn tick_period_ms(&self) -> u64 {
        let base = if self.long_poll_wait_s > 0 {
            50
        } else {
            (self.sync_interval_ms / 10).clamp(20, 100)
        };
        base.min(self.usage_report_interval_ms)
    }

    /// Why the filter cannot call the control plane, when the edge key is missing.
    pub fn missing_edge_key(&self) -> Option<String> {
        if self.edge_key.is_some() {
            return None;
        }
        let name = self.edge_key_env.as_deref().unwrap_or_default();
        Some(format!(
            "the edge key is missing: environment variable {name:?} is not set in the VM (Envoy: \
             list it in vm_config.environment_variables.host_env_keys and set it in Envoy's \
             environment); the key set cannot be fetched and every keyed request gets 503 \
             keyset_unavailable"
        ))
    }

    /// Timeout of one key-set call (the long-poll wait plus the request timeout).
    pub fn sync_timeout_ms(&self) -> u64 {
        u64::from(self.long_poll_wait_s) * 1000 + self.request_timeout_ms
    }
}
