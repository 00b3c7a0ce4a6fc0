//! The lease: which worker leads (alone calls the control plane), held in shared data with
//! compare-and-swap.

use super::Syncer;
use crate::config::Config;
use crate::host::{Host, LogLevel, SharedDataError};

/// The lease's time to live: long enough to survive a few missed ticks.
pub fn lease_ttl_ms(config: &Config) -> u64 {
    (config.tick_period_ms() * 10).max(2000)
}

impl Syncer {
    pub(super) fn acquire_lease(
        &mut self,
        host: &mut impl Host,
        config: &Config,
        now: u64,
    ) -> bool {
        let key = self.key("lease");
        let (value, cas) = host.shared_get(&key);
        let current = value.as_deref().and_then(parse_lease);
        let free = match current {
            None => true,
            Some((owner, until)) => owner == self.worker || until <= now,
        };
        if !free {
            return false;
        }
        let mine = format!("{:016x} {}", self.worker, now + lease_ttl_ms(config));
        match host.shared_set(&key, mine.as_bytes(), cas) {
            Ok(()) => {
                if cas.is_none() {
                    // First write of the key cannot be compare-and-swapped: read back who won.
                    let (v, _) = host.shared_get(&key);
                    v.as_deref()
                        .and_then(parse_lease)
                        .is_some_and(|(o, _)| o == self.worker)
                } else {
                    true
                }
            }
            Err(SharedDataError::CasMismatch) => false,
            Err(SharedDataError::Refused) => {
                host.log(LogLevel::Warn, "shared data refused the lease write");
                false
            }
        }
    }
}

fn parse_lease(v: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (owner, until) = s.split_once(' ')?;
    Some((u64::from_str_radix(owner, 16).ok()?, until.parse().ok()?))
}
