//! Wake-up: the leader tells every other VM of its process of a new revision through that VM's
//! shared queue, so that it follows at once, not at its next tick.

use super::{Syncer, metrics};
use crate::config::Config;
use crate::host::Host;

impl Syncer {
    /// The leader woke this VM (its queue has items): follow the published head now.
    pub fn on_queue_ready(&mut self, host: &mut impl Host, config: &Config) {
        if let Some(token) = self.wake_queue {
            host.queue_drain(token);
        }
        if self.idle {
            return;
        }
        let before = self.revision();
        self.follow(host);
        if self.revision() != before {
            host.counter_add(metrics::WOKEN, 1);
        }
        let now = host.now_ms();
        self.report_gauges(host, config, now);
    }

    fn wake_queue_name(&self, index: u32) -> String {
        format!("{}/wake/{index}", self.ns)
    }

    /// Registers this VM's wake-up queue once it has an index (a VM that keeps a set only).
    pub(super) fn register_wake_queue(&mut self, host: &mut impl Host) {
        if self.wake_queue.is_some() {
            return;
        }
        if let Some(index) = self.vm_index {
            self.wake_queue = host.queue_register(&self.wake_queue_name(index));
        }
    }

    /// Wakes this VM through its own queue (its root context then runs
    /// [`Syncer::on_queue_ready`]); `false` when it has no queue.
    pub fn wake_self(&self, host: &mut impl Host) -> bool {
        match (self.wake_queue, self.vm_index) {
            (Some(_), Some(index)) => host.queue_enqueue(&self.wake_queue_name(index), b"self"),
            _ => false,
        }
    }

    /// Wakes every other VM of the process that registered a wake-up queue, with `revision`.
    pub(super) fn wake_followers(&self, host: &mut impl Host, revision: u64) {
        let (count, _) = host.shared_get(&self.key("vms"));
        let count: u32 = count
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let message = revision.to_string();
        for index in (0..count).filter(|&i| Some(i) != self.vm_index) {
            host.queue_enqueue(&self.wake_queue_name(index), message.as_bytes());
        }
    }
}
