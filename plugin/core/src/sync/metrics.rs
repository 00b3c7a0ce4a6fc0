//! Metric names used by the sync machine.

/// Counter: calls made to the key-set feed.
pub const CALLS: &str = "keygate.sync.calls";
/// Counter: successful answers (200 applied, 304, or no change).
pub const SUCCESS: &str = "keygate.sync.success";
/// Counter: revisions picked up from shared data by following.
pub const FOLLOWED: &str = "keygate.sync.followed";
/// Counter: of those, revisions picked up at once because the leader woke the VM.
pub const WOKEN: &str = "keygate.sync.woken";
/// Gauge: revision of the set (the leader's, for the process; per VM under `keygate.vm.<n>.`).
pub const REVISION: &str = "keygate.keyset.revision";
/// Gauge: keys in the set (likewise).
pub const KEYS: &str = "keygate.keyset.keys";
/// Gauge: heap bytes of the set (likewise).
pub const HEAP_BYTES: &str = "keygate.keyset.heap_bytes";
/// Gauge: seconds since the last successful sync the set reflects (likewise).
pub const STALENESS: &str = "keygate.keyset.staleness_seconds";
/// Gauge: the VM's linear memory in bytes (likewise).
pub const MEMORY: &str = "keygate.wasm.memory_bytes";

/// The per-VM name of a gauge: `keygate.vm.<index>.<rest>` for `keygate.<rest>`. Envoy
/// keeps one value per name for the whole process (every VM writes the same stat), so a
/// VM's own value needs its own name; `envoy/envoy.yaml`'s `stats_tags` turn the index
/// back into a `keygate_vm` label.
pub fn per_vm(index: u32, gauge: &str) -> String {
    let rest = gauge.strip_prefix("keygate.").unwrap_or(gauge);
    format!("keygate.vm.{index}.{rest}")
}
