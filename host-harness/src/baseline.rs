//! The harness's own cost, to subtract from a filter's: no-op filters and a timing loop that
//! interleaves a filter's rounds with theirs, so that both see the same load.

use std::time::Instant;

use crate::error::{HarnessError, Result};
use crate::harness::Harness;
use crate::plugin::Plugin;
use crate::stream::{Disposition, Request};

/// A filter whose every HTTP callback returns at once (continue): the harness alone, allow path.
///
/// It exports the callbacks every filter needs for a request (create the context, read the
/// request headers, delete the context) and no other: a host skips a callback a module does not
/// export, so the harness alone enters the VM as often as for a filter that does only this (as
/// `keygate_plugin.wasm`, whose exports are trimmed to its own callbacks).
pub const NOOP_CONTINUE_WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_delete") (param i32)))
"#;

/// A filter that answers every request with an empty local 401 and does nothing else: the
/// harness alone, deny path (the same callbacks as [`NOOP_CONTINUE_WAT`]).
pub const NOOP_DENY_WAT: &str = r#"
(module
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $local (i32.const 401) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
"#;

/// One kind of request to time: the requests, and how each must end.
#[derive(Debug, Clone, Copy)]
pub struct Kind<'a> {
    /// The requests, each run once per round.
    pub requests: &'a [Request],
    /// How each must end under the filter ([`Disposition::Completed`] kinds are compared with
    /// [`NOOP_CONTINUE_WAT`], every other with [`NOOP_DENY_WAT`]).
    pub expect: Disposition,
}

/// Nanoseconds per request, in the order of the kinds: the filter's, and the harness alone's on
/// the same requests.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Under the filter.
    pub filter: Vec<Vec<u64>>,
    /// Under the matching no-op filter.
    pub harness_alone: Vec<Vec<u64>>,
}

/// Runs every request on worker 0, each timed alone (nanoseconds pushed to `samples`), and
/// checks that it ends as `expect`.
///
/// # Errors
/// [`HarnessError::UnexpectedOutcome`] when a request ends otherwise; the harness's own errors.
pub fn time_each(
    harness: &mut Harness,
    requests: &[Request],
    expect: Disposition,
    samples: &mut Vec<u64>,
) -> Result<()> {
    for request in requests {
        let request = request.clone();
        let started = Instant::now();
        let outcome = harness.run_request_taken_on(0, request)?;
        let elapsed = started.elapsed().as_nanos() as u64;
        if outcome.disposition != expect {
            return Err(HarnessError::UnexpectedOutcome {
                expected: format!("{expect:?}"),
                got: format!("{outcome:?}"),
            });
        }
        samples.push(elapsed);
    }
    Ok(())
}

/// Times every kind under `filter` and under the no-op filters, kind after kind, in `rounds`
/// rounds after one uncounted warm-up round.
///
/// # Errors
/// As [`time_each`]; a no-op filter that does not load (a wasmtime problem).
pub fn interleaved(filter: &mut Harness, kinds: &[Kind<'_>], rounds: usize) -> Result<Timings> {
    let mut noop_continue =
        Harness::builder(Plugin::load(NOOP_CONTINUE_WAT.as_bytes())?).build()?;
    let mut noop_deny = Harness::builder(Plugin::load(NOOP_DENY_WAT.as_bytes())?).build()?;
    let mut timings = Timings {
        filter: vec![Vec::new(); kinds.len()],
        harness_alone: vec![Vec::new(); kinds.len()],
    };
    for round in 0..=rounds {
        for (k, kind) in kinds.iter().enumerate() {
            let (mut warm_f, mut warm_b) = (Vec::new(), Vec::new());
            let (fs, bs) = if round == 0 {
                (&mut warm_f, &mut warm_b)
            } else {
                (&mut timings.filter[k], &mut timings.harness_alone[k])
            };
            time_each(filter, kind.requests, kind.expect, fs)?;
            if kind.expect == Disposition::Completed {
                time_each(
                    &mut noop_continue,
                    kind.requests,
                    Disposition::Completed,
                    bs,
                )?;
            } else {
                time_each(
                    &mut noop_deny,
                    kind.requests,
                    Disposition::LocalResponse,
                    bs,
                )?;
            }
        }
    }
    Ok(timings)
}

/// The filter's own part round by round (nanoseconds): in each round, the median of the
/// filter's block of `block` requests minus the median of the harness alone's block on the same
/// requests, timed right after it ([`interleaved`] appends one block per round). On a machine
/// whose speed changes between rounds each pair stays comparable, where the medians of the
/// whole runs mix fast and slow rounds.
#[must_use]
pub fn own_part_per_round(filter: &[u64], alone: &[u64], block: usize) -> Vec<i64> {
    let median = |chunk: &[u64]| {
        let mut sorted = chunk.to_vec();
        sorted.sort_unstable();
        sorted[sorted.len() / 2] as i64
    };
    filter
        .chunks_exact(block.max(1))
        .zip(alone.chunks_exact(block.max(1)))
        .map(|(f, a)| median(f) - median(a))
        .collect()
}

/// How the filter's own part spread over the rounds (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundSpread {
    /// The median round's.
    pub median: i64,
    /// The cheapest round's.
    pub least: i64,
    /// The dearest round's.
    pub most: i64,
}

/// The spread of [`own_part_per_round`] over the rounds; `None` without a complete round.
#[must_use]
pub fn own_part_spread(filter: &[u64], alone: &[u64], block: usize) -> Option<RoundSpread> {
    let mut rounds = own_part_per_round(filter, alone, block);
    rounds.sort_unstable();
    Some(RoundSpread {
        median: *rounds.get(rounds.len() / 2)?,
        least: *rounds.first()?,
        most: *rounds.last()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_part_pairs_each_round_with_its_own_baseline() {
        // round 1 fast (filter 30 over 10), round 2 slow (filter 60 over 20), round 3 fast
        let filter = [29, 30, 31, 59, 60, 61, 30, 30, 30];
        let alone = [10, 10, 11, 19, 20, 20, 9, 10, 10];
        assert_eq!(own_part_per_round(&filter, &alone, 3), [20, 40, 20]);
        // an incomplete last block is left out
        assert_eq!(own_part_per_round(&filter[..4], &alone[..4], 3), [20]);
        assert_eq!(
            own_part_spread(&filter, &alone, 3),
            Some(RoundSpread {
                median: 20,
                least: 20,
                most: 40
            })
        );
        assert_eq!(own_part_spread(&filter[..2], &alone[..2], 3), None);
    }

    #[test]
    fn no_op_filters_end_requests_as_named_and_every_request_is_timed() {
        let requests = vec![Request::get("/a"), Request::get("/b")];
        let mut deny = Harness::builder(Plugin::load(NOOP_DENY_WAT.as_bytes()).unwrap())
            .build()
            .unwrap();
        let kinds = [
            Kind {
                requests: &requests,
                expect: Disposition::LocalResponse,
            },
            Kind {
                requests: &requests[..1],
                expect: Disposition::LocalResponse,
            },
        ];
        let t = interleaved(&mut deny, &kinds, 3).unwrap();
        assert_eq!(t.filter.iter().map(Vec::len).collect::<Vec<_>>(), [6, 3]);
        assert_eq!(
            t.harness_alone.iter().map(Vec::len).collect::<Vec<_>>(),
            [6, 3]
        );
        assert!(t.filter.iter().flatten().all(|ns| *ns > 0));

        // a filter that ends requests otherwise is an error, not a figure
        let mut wrong = Harness::builder(Plugin::load(NOOP_CONTINUE_WAT.as_bytes()).unwrap())
            .build()
            .unwrap();
        let err = interleaved(&mut wrong, &kinds[..1], 1).unwrap_err();
        assert!(
            matches!(err, HarnessError::UnexpectedOutcome { .. }),
            "{err}"
        );
    }
}
