//! The limits over the fake host: the lease bound with several simulated workers, the exact
//! process counters across threads, windows, owner pools (one per workspace and owner), the
//! fields.

use std::sync::Arc;

use keygate_protocol::KeyId;
use keygate_protocol::policy::{LimitPool, RateLimit};

use super::*;
use crate::fake::{FakeHost, World};

fn limit(name: &str, limit: u32, window_s: u32, pool: LimitPool) -> RateLimit {
    RateLimit {
        name: name.into(),
        limit,
        window_s,
        pool,
    }
}

const T0: u64 = 1_763_900_000_000; // a multiple of 10 s

#[test]
fn windows_are_aligned_to_the_epoch_and_reset_counts_whole_seconds() {
    assert_eq!(window(T0, 10), (T0 / 10_000, 10));
    assert_eq!(window(T0 + 6_400, 10), (T0 / 10_000, 4));
    assert_eq!(window(T0 + 9_999, 10), (T0 / 10_000, 1));
    assert_eq!(window(T0 + 10_000, 10), (T0 / 10_000 + 1, 10));
    assert_eq!(quota(100, 1), 100);
    assert_eq!(quota(100, 3), 34);
    assert_eq!(quota(1, 8), 1);
    assert_eq!((chunk(100), chunk(1), chunk(1_000_000)), (3, 1, MAX_CHUNK));
}

#[test]
fn fields_follow_the_drafts_structured_syntax() {
    let limits = [
        limit("burst", 100, 10, LimitPool::Key),
        limit("daily", 5000, 86_400, LimitPool::Owner),
    ];
    let counters = AtomicCounters::default();
    let key = KeyId::from_bytes([1; 16]);
    for _ in 0..63 {
        assert!(matches!(
            check(&limits, key, "acme", T0 + 6_000, 1, &mut &counters),
            Outcome::Within(_)
        ));
    }
    let Outcome::Within(s) = check(&limits, key, "acme", T0 + 6_000, 1, &mut &counters) else {
        panic!("within")
    };
    assert_eq!(
        s.policy_field(),
        r#""burst";q=100;w=10, "daily";q=5000;w=86400"#
    );
    assert_eq!(s.limit_field(), r#""burst";r=36;t=4"#);
    // an allowed request's fields: the same policy, and one item per limit
    let [policy, rl] = s.allowed_fields();
    assert_eq!(policy, ("ratelimit-policy", s.policy_field()));
    assert_eq!(
        rl,
        (
            "ratelimit",
            r#""burst";r=36;t=4, "daily";r=4936;t=42394"#.to_owned()
        )
    );
    // the next request counts each item down by one
    let Outcome::Within(s) = check(&limits, key, "acme", T0 + 6_000, 1, &mut &counters) else {
        panic!("within")
    };
    assert_eq!(
        s.allowed_fields()[1].1,
        r#""burst";r=35;t=4, "daily";r=4935;t=42394"#
    );
    // in a fleet of 3, each proxy enforces and advertises a third (rounded up)
    let other = KeyId::from_bytes([9; 16]);
    let Outcome::Within(s) = check(&limits, other, "initech", T0 + 6_000, 3, &mut &counters) else {
        panic!("within")
    };
    assert_eq!(
        s.policy_field(),
        r#""burst";q=34;w=10, "daily";q=1667;w=86400"#
    );
    // a key without limits counts nothing
    assert_eq!(
        check(&[], key, "acme", T0, 1, &mut &counters),
        Outcome::Unlimited
    );
}

#[test]
fn the_process_counters_are_exact_across_threads_and_reset_each_window() {
    let limits = [limit("burst", 100, 10, LimitPool::Key)];
    let counters = Arc::new(AtomicCounters::default());
    let key = KeyId::from_bytes([2; 16]);
    let passes = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&counters);
                let limits = &limits;
                s.spawn(move || {
                    (0..60)
                        .filter(|_| {
                            matches!(
                                check(limits, key, "o", T0 + 1_000, 1, &mut &*c),
                                Outcome::Within(_)
                            )
                        })
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(passes, 100);
    let Outcome::Limited(s) = check(&limits, key, "o", T0 + 7_500, 1, &mut &*counters) else {
        panic!("limited")
    };
    let [retry, policy, rl] = s.limited_fields();
    assert_eq!(retry, ("retry-after", "3".to_owned()));
    assert_eq!(policy.1, r#""burst";q=100;w=10"#);
    assert_eq!(rl.1, r#""burst";r=0;t=3"#);
    // the next window starts from zero
    assert!(matches!(
        check(&limits, key, "o", T0 + 10_000, 1, &mut &*counters),
        Outcome::Within(_)
    ));
}

#[test]
fn an_owner_pool_is_shared_by_the_owners_keys_and_a_key_pool_is_not() {
    let pooled = [limit("team", 10, 60, LimitPool::Owner)];
    let own = [limit("team", 10, 60, LimitPool::Key)];
    let counters = AtomicCounters::default();
    let (a, b) = (KeyId::from_bytes([3; 16]), KeyId::from_bytes([4; 16]));
    let mut passes = 0;
    for i in 0..20 {
        let key = if i % 2 == 0 { a } else { b };
        if matches!(
            check(&pooled, key, "acme", T0, 1, &mut &counters),
            Outcome::Within(_)
        ) {
            passes += 1;
        }
    }
    assert_eq!(passes, 10);
    // another owner has its own pool; per-key limits of the same name count each key
    assert!(matches!(
        check(&pooled, a, "globex", T0, 1, &mut &counters),
        Outcome::Within(_)
    ));
    let own_passes = (0..20)
        .filter(|i| {
            let key = if i % 2 == 0 { a } else { b };
            matches!(
                check(&own, key, "acme", T0, 1, &mut &counters),
                Outcome::Within(_)
            )
        })
        .count();
    assert_eq!(own_passes, 20);
}

fn scoped(name: &str, limit_: u32, scope: &str) -> RateLimit {
    limit(name, limit_, 60, LimitPool::OwnerIn(scope.into()))
}

/// Requests of `(limits, key, owner)` in turn, `rounds` times each, against `counters`: the
/// passes of each.
fn passes_each(
    requests: &[(&[RateLimit], KeyId, &str)],
    rounds: usize,
    counters: &mut impl Counters,
) -> Vec<usize> {
    let mut passes = vec![0; requests.len()];
    for _ in 0..rounds {
        for (i, (limits, key, owner)) in requests.iter().enumerate() {
            if matches!(
                check(limits, *key, owner, T0, 1, counters),
                Outcome::Within(_)
            ) {
                passes[i] += 1;
            }
        }
    }
    passes
}

/// [`passes_each`] against the wasm filter's leases on a fresh fake host's shared data: the
/// passes of each, and how many shared counters the requests made.
fn passes_each_leased(
    requests: &[(&[RateLimit], KeyId, &str)],
    rounds: usize,
) -> (Vec<usize>, usize) {
    let world = World::new(T0);
    let mut host = FakeHost::new(&world, 0);
    let mut leases = Leases::default();
    let mut leased = Leased {
        leases: &mut leases,
        host: &mut host,
    };
    let passes = passes_each(requests, rounds, &mut leased);
    let counters = world.borrow().shared.len();
    (passes, counters)
}

#[test]
fn owners_of_one_name_in_two_workspaces_count_in_two_pools() {
    // `acme` in workspace ws-a and `acme` in ws-b: one key each, pool 10 per 60 s.
    let (in_a, in_b) = ([scoped("team", 10, "ws-a")], [scoped("team", 10, "ws-b")]);
    let (a, b) = (KeyId::from_bytes([11; 16]), KeyId::from_bytes([12; 16]));
    let requests: [(&[RateLimit], KeyId, &str); 2] = [(&in_a, a, "acme"), (&in_b, b, "acme")];
    // In one process (module, forward-auth) and across leasing workers (wasm filter).
    let atomic = AtomicCounters::default();
    assert_eq!(passes_each(&requests, 15, &mut &atomic), [10, 10]);
    let (passes, shared) = passes_each_leased(&requests, 15);
    assert_eq!(passes, [10, 10]);
    assert_eq!(shared, 2, "two shared counters");
    // A pool without a scope (a version-2 set) is still one pool per owner string.
    let (old_a, old_b) = (
        [limit("team", 10, 60, LimitPool::Owner)],
        [limit("team", 10, 60, LimitPool::Owner)],
    );
    let old: [(&[RateLimit], KeyId, &str); 2] = [(&old_a, a, "acme"), (&old_b, b, "acme")];
    let total: usize = passes_each(&old, 15, &mut &AtomicCounters::default())
        .iter()
        .sum();
    assert_eq!(total, 10);
}

#[test]
fn keys_of_one_owner_in_one_workspace_still_share_one_pool() {
    let pooled = [scoped("team", 10, "ws-a")];
    let (a, b) = (KeyId::from_bytes([13; 16]), KeyId::from_bytes([14; 16]));
    let requests: [(&[RateLimit], KeyId, &str); 2] = [(&pooled, a, "acme"), (&pooled, b, "acme")];
    let atomic = AtomicCounters::default();
    assert_eq!(passes_each(&requests, 15, &mut &atomic), [5, 5]);
    assert_eq!(passes_each_leased(&requests, 15).0, [5, 5]);
    // Another owner in the same workspace has its own pool.
    let other: [(&[RateLimit], KeyId, &str); 1] = [(&pooled, a, "globex")];
    assert_eq!(passes_each(&other, 15, &mut &atomic), [10]);
}

#[test]
fn a_scope_and_an_owner_never_run_into_each_other() {
    let key = KeyId::from_bytes([15; 16]);
    let (ab, a) = (scoped("team", 1, "ab"), scoped("team", 1, "a"));
    let one = Bucket {
        key_id: key,
        owner: "c",
        limit: &ab,
    };
    let two = Bucket {
        key_id: key,
        owner: "bc",
        limit: &a,
    };
    assert_ne!(one.id(), two.id());
    assert_eq!(one.shared_key(), "keygate.rl.s.2.abc/team/60");
    assert_eq!(two.shared_key(), "keygate.rl.s.1.abc/team/60");
    let unscoped = limit("team", 1, 60, LimitPool::Owner);
    let old = Bucket {
        key_id: key,
        owner: "abc",
        limit: &unscoped,
    };
    assert_eq!(old.shared_key(), "keygate.rl.o.abc/team/60");
    assert!(old.id() != one.id() && old.id() != two.id());
}

/// `workers` simulated VMs with their own leases over one fake host's shared data; requests go
/// to the workers in the order `pick` gives. The passes in one window.
fn leased_passes(
    workers: usize,
    requests: usize,
    quota_: u32,
    pick: &mut dyn FnMut(usize) -> usize,
) -> (usize, Vec<usize>, u64) {
    let world = World::new(T0);
    let mut hosts: Vec<FakeHost> = (0..workers).map(|i| FakeHost::new(&world, i)).collect();
    let mut leases: Vec<Leases> = (0..workers).map(|_| Leases::default()).collect();
    let limits = [limit("burst", quota_, 10, LimitPool::Key)];
    let key = KeyId::from_bytes([5; 16]);
    let mut per_worker = vec![0; workers];
    for i in 0..requests {
        let w = pick(i);
        let mut counters = Leased {
            leases: &mut leases[w],
            host: &mut hosts[w],
        };
        if matches!(
            check(&limits, key, "o", T0 + 500, 1, &mut counters),
            Outcome::Within(_)
        ) {
            per_worker[w] += 1;
        }
    }
    let reads = world.borrow().shared_reads.values().sum();
    (per_worker.iter().sum(), per_worker, reads)
}

#[test]
fn leases_keep_passes_within_the_stated_bound_whatever_the_spread() {
    for workers in [1usize, 2, 4, 8] {
        let l = 100u32;
        let lower = l as usize - (workers - 1) * chunk(l) as usize;
        // round robin, one worker taking all, and a seeded random spread
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move |_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % workers as u64) as usize
        };
        let spreads: [&mut dyn FnMut(usize) -> usize; 3] =
            [&mut |i| i % workers, &mut |_| 0, &mut random];
        for pick in spreads {
            let (passes, per, _) = leased_passes(workers, 400, l, pick);
            assert!(
                (lower..=l as usize).contains(&passes),
                "{workers} workers: {passes} passes ({per:?}), bound [{lower}, {l}]"
            );
        }
    }
    // one worker loses nothing: exactly the quota
    assert_eq!(leased_passes(1, 400, 100, &mut |_| 0).0, 100);
}

#[test]
fn leases_spare_the_host_a_call_on_most_requests() {
    // a limit high enough never to trip: one shared read per chunk of 64 requests
    let (passes, _, reads) = leased_passes(4, 4_000, 1_000_000, &mut |i| i % 4);
    assert_eq!(passes, 4_000);
    assert!(reads <= 4_000 / u64::from(MAX_CHUNK) + 4, "{reads} reads");
}

#[test]
fn a_worker_that_found_the_window_spent_asks_no_more_until_the_next() {
    let world = World::new(T0);
    let mut host = FakeHost::new(&world, 0);
    let mut other = FakeHost::new(&world, 1);
    let (mut mine, mut theirs) = (Leases::default(), Leases::default());
    let limits = [limit("burst", 2, 10, LimitPool::Key)];
    let key = KeyId::from_bytes([6; 16]);
    let run = |leases: &mut Leases, host: &mut FakeHost, at: u64| {
        check(&limits, key, "o", at, 1, &mut Leased { leases, host })
    };
    assert!(matches!(
        run(&mut theirs, &mut other, T0),
        Outcome::Within(_)
    ));
    assert!(matches!(
        run(&mut theirs, &mut other, T0),
        Outcome::Within(_)
    ));
    assert!(matches!(run(&mut mine, &mut host, T0), Outcome::Limited(_)));
    let reads = world.borrow().shared_reads.values().sum::<u64>();
    assert!(matches!(
        run(&mut mine, &mut host, T0 + 100),
        Outcome::Limited(_)
    ));
    assert_eq!(world.borrow().shared_reads.values().sum::<u64>(), reads);
    // the next window leases again; pruning forgets the spent window's lease
    assert!(matches!(
        run(&mut mine, &mut host, T0 + 10_000),
        Outcome::Within(_)
    ));
    theirs.prune(T0 + 10_000);
    assert!(theirs.is_empty());
    assert_eq!(mine.len(), 1);
}
