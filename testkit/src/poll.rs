//! Polling for state that other processes reach asynchronously: a bound, not a timing.

use std::time::{Duration, Instant};

/// Polls `check` every 25 ms until it returns `Ok` or `timeout` passes; panics with `what` and
/// the last observation (the `Err`) otherwise. The check decides; the timeout only bounds it.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not reached within {timeout:?}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `check` up to `tries` times, `pause` apart, until it returns `Some`; panics with
/// `what` otherwise. For state that reaches a database asynchronously over real HTTP.
pub fn eventually<T>(
    what: &str,
    tries: usize,
    pause: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    for _ in 0..tries {
        if let Some(v) = check() {
            return v;
        }
        std::thread::sleep(pause);
    }
    panic!("{what}: not reached after {tries} tries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_ok_once_the_check_passes() {
        let mut calls = 0;
        let got = wait_for("third call", Duration::from_secs(5), || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("call {calls}"))
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "never: not reached within 50ms; last: still no")]
    fn panics_with_the_last_observation_at_the_deadline() {
        wait_for::<()>(
            "never",
            Duration::from_millis(50),
            || Err("still no".into()),
        );
    }

    #[test]
    fn eventually_returns_the_first_some() {
        let mut calls = 0;
        let got = eventually("second call", 5, Duration::from_millis(1), || {
            calls += 1;
            (calls == 2).then_some(calls)
        });
        assert_eq!(got, 2);
    }

    #[test]
    #[should_panic(expected = "never: not reached after 3 tries")]
    fn eventually_panics_after_the_last_try() {
        eventually::<()>("never", 3, Duration::from_millis(1), || None);
    }
}
