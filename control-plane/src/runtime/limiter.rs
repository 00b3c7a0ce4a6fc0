//! Failed-authentication rate limiting: failures per client address in fixed one-minute windows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts failed authentications per client address in fixed one-minute windows.
#[derive(Debug)]
pub struct AuthLimiter {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    /// A limiter allowing `limit` failures per minute per address.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(60),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// When the address is over its limit, how long until it may try again.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        let (start, n) = map.get(&ip)?;
        let elapsed = start.elapsed();
        (elapsed < self.window && *n >= self.limit).then(|| self.window - elapsed)
    }

    /// Records one failure.
    pub fn fail(&self, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                let window = self.window;
                map.retain(|_, (s, _)| s.elapsed() < window);
            }
            let e = map.entry(ip).or_insert((Instant::now(), 0));
            if e.0.elapsed() >= self.window {
                *e = (Instant::now(), 0);
            }
            e.1 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn limiter_blocks_after_limit() {
        let l = AuthLimiter::new(2);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert!(l.blocked(ip).is_none());
        l.fail(ip);
        assert!(l.blocked(ip).is_none());
        l.fail(ip);
        let wait = l.blocked(ip).expect("blocked");
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(0));
        assert!(l.blocked(other).is_none());
    }
}
