//! Following: a worker catches up with the published head (deltas from its revision, else the
//! snapshot and the deltas after it).

use std::sync::Arc;

use keygate_protocol::keyset::KeySet;

use super::publish::Head;
use super::{Syncer, metrics};
use crate::host::{Host, LogLevel};

impl Syncer {
    /// Catches up with the published head (deltas from our revision, else snapshot + deltas).
    pub(super) fn follow(&mut self, host: &mut impl Host) {
        let (Some(head), _) = self.read_head(host) else {
            return;
        };
        let mine = self.revision();
        if mine == Some(head.rev) {
            if self.fresh_at_ms.is_none_or(|t| t < head.ok_ms) {
                self.fresh_at_ms = Some(head.ok_ms);
            }
            return;
        }
        if mine.is_some_and(|m| m > head.rev) {
            // We are ahead (we were leader and published later, or head is being replaced).
            return;
        }
        let before = mine;
        if !self.apply_chain(host, &head) {
            // Not reachable by deltas: take the snapshot, then the chain after it.
            let (snap, _) = host.shared_get(&self.key("snap"));
            if let Some(bytes) = snap.filter(|b| !b.is_empty()) {
                let mut set = KeySet::new();
                match set.apply(&bytes) {
                    Ok(_) => {
                        // Replace only if it moves us forward.
                        if set.revision() > self.revision() {
                            self.set = Some(Arc::new(set));
                        }
                    }
                    Err(e) => host.log(
                        LogLevel::Warn,
                        &format!("published snapshot did not apply ({e}); will retry"),
                    ),
                }
            }
            self.apply_chain(host, &head);
        }
        if self.revision() == Some(head.rev) {
            self.fresh_at_ms = Some(self.fresh_at_ms.map_or(head.ok_ms, |t| t.max(head.ok_ms)));
        }
        if self.revision() != before {
            host.counter_add(metrics::FOLLOWED, 1);
        }
    }

    /// Applies published deltas starting at our revision; true when it reached `head.rev`.
    fn apply_chain(&mut self, host: &mut impl Host, head: &Head) -> bool {
        let Some(set) = self.set.as_mut().map(Arc::make_mut) else {
            return false;
        };
        for &(base, target) in &head.chain {
            if set.revision() != Some(base) {
                continue;
            }
            let (bytes, _) = host.shared_get(&format!("{}/delta/{target}", self.ns));
            let Some(bytes) = bytes else { return false };
            if set.apply(&bytes).is_err() {
                return false;
            }
        }
        set.revision() == Some(head.rev)
    }
}
