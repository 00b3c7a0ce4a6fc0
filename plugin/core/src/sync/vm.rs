//! The VM's place in its process: its index (for per-VM gauges and wake-up queues), and the
//! main-thread VM presumed idle (it keeps no key set).

use super::Syncer;
use crate::host::{Host, LogLevel};

impl Syncer {
    /// Called once when the VM is configured: catches up with a published set, unless presumed
    /// Envoy's main-thread VM. Envoy configures, for one filter, first a
    /// throw-away copy of the VM (proxy-wasm's configuration canary, destroyed at once), then
    /// the main thread's VM, then one per worker; only the workers' VMs ever see a request. The
    /// VM configured second in a process is therefore presumed the main thread's, and keeps no
    /// key set (a whole copy of it, otherwise, for nothing). Should that presumption be wrong
    /// (another host, another order), its first request wakes it ([`Syncer::wake`]).
    pub fn on_configure(&mut self, host: &mut impl Host) {
        self.read_node(host);
        if self.claim_counter(host, "configured") == Some(1) {
            self.idle = true;
            host.log(
                LogLevel::Info,
                "this VM was configured second in the process (Envoy's main-thread VM, which serves no request): it keeps no key set",
            );
            return;
        }
        // A VM configured while a set is published (a worker's VM rebuilt after a crash, a
        // new configuration) serves it from its first request. Reading shared data takes no
        // lease, so the canary may do it too; at a process's start nothing is published yet.
        self.follow(host);
    }

    /// Whether this VM keeps no key set (see [`Syncer::on_configure`]).
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// The VM serves a request: if it was idle, it catches up with the published set now.
    pub fn wake(&mut self, host: &mut impl Host) {
        if self.idle {
            self.idle = false;
            self.follow(host);
        }
    }

    /// Claims this VM's index: the shared counter's value, incremented with compare-and-swap.
    pub(super) fn claim_vm_index(&mut self, host: &mut impl Host) {
        if self.vm_index.is_none() {
            self.vm_index = self.claim_counter(host, "vms");
        }
    }

    /// Takes the current value of the shared counter `name` and increments it
    /// (compare-and-swap); `None` if shared data keeps refusing.
    pub(super) fn claim_counter(&mut self, host: &mut impl Host, name: &str) -> Option<u32> {
        let key = self.key(name);
        for _ in 0..8 {
            let (value, cas) = host.shared_get(&key);
            let taken: u32 = value
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let next = (taken + 1).to_string();
            if host.shared_set(&key, next.as_bytes(), cas).is_ok() {
                if cas.is_some() {
                    return Some(taken);
                }
                // First write of the key is not compare-and-swapped: read back who won.
                let (v, _) = host.shared_get(&key);
                if v.as_deref() == Some(next.as_bytes()) {
                    return Some(taken);
                }
            }
        }
        None
    }
}
