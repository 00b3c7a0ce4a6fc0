//! Gauges: a VM's view of its set, under its per-VM names, and under the plain names when it
//! leads.

use super::{Syncer, metrics};
use crate::config::Config;
use crate::host::Host;

impl Syncer {
    /// This VM's gauges: under its per-VM names always, under the plain names when it leads
    /// (the process's view: what its leader fetched).
    pub(super) fn report_gauges(&self, host: &mut impl Host, _config: &Config, now: u64) {
        let mut values: [(&str, Option<u64>); 4] = [
            (metrics::REVISION, None),
            (metrics::KEYS, None),
            (metrics::HEAP_BYTES, None),
            (metrics::STALENESS, None),
        ];
        if let Some(set) = &self.set {
            values[0].1 = Some(set.revision().unwrap_or(0));
            values[1].1 = Some(set.len() as u64);
            values[2].1 = Some(set.heap_bytes() as u64);
        }
        values[3].1 = self.fresh_at_ms.map(|at| now.saturating_sub(at) / 1000);
        for (name, value) in values {
            if let Some(v) = value {
                self.gauge(host, name, v);
            }
        }
    }

    /// Sets `name` under this VM's per-VM name, and under the plain name when it leads.
    pub fn gauge(&self, host: &mut impl Host, name: &str, value: u64) {
        if let Some(index) = self.vm_index {
            host.gauge_set(&metrics::per_vm(index, name), value);
        }
        if self.leader {
            host.gauge_set(name, value);
        }
    }
}
