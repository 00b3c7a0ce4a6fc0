//! The real filter `.wasm` against a misbehaving control plane over real TCP: a small HTTP/1.1
//! server in the test relays genuine key-set answers from a real control plane (SQLite) and, on
//! command, holds requests past the filter's timeout, drops connections, or answers garbage.
//! Every case checks that the last good set is kept, that the metrics name the failure, and that
//! a revocation made meanwhile lands once the server behaves again. A last case traps a real
//! filter instance and checks the failure policy, the rebuild and the re-sync.
//!
//! Run with `-- --nocapture` to see the figures (`FIGURE …` lines) quoted in RELIABILITY.md.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use keygate_e2e::{
    CLUSTER, ControlPlane, IssuedKey, decision_count, denial, harness_builder, keyset_callouts,
    keyset_calls, metric,
};
use keygate_host_harness::{
    Cluster, Disposition, FailurePolicy, Harness, LogLevel, Request, StreamOutcome, TimeoutDelivery,
};
use keygate_protocol::wire;
use serde_json::json;

/// Short intervals so that every case runs in a few seconds: polls every 200 ms, a call times
/// out after 300 ms.
const FAST: &str = r#""sync_interval_ms":200,"request_timeout_ms":300"#;

/// Every failure code of `keygate.sync.failure.<code>`.
const CODES: [&str; 6] = [
    "dispatch",
    "unreachable",
    "unauthorized",
    "status",
    "garbled",
    "base_mismatch",
];

/// How the server answers the next key-set requests.
#[derive(Clone, Debug)]
enum Fault {
    /// Relay the control plane's answer as is.
    Honest,
    /// Hold the request this long, then relay (too late: the caller has given up).
    Hold(Duration),
    /// Accept, read the request, close without a byte.
    CloseAtOnce,
    /// Half a status line (`HTTP/1.1 2`), then close.
    HalfStatusLine,
    /// A genuine full snapshot announced with its whole `Content-Length`; half of it, then close.
    HalfBody,
    /// A fixed answer.
    Canned {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A genuine full snapshot cut in half, with a `Content-Length` that matches the cut body.
    TruncatedSnapshot,
    /// For `?since=R`, the genuine delta from `R-1`: well-formed, but not from the caller's base.
    OtherBase,
}

impl Fault {
    fn label(&self) -> String {
        match self {
            Fault::Honest => "honest".into(),
            Fault::Hold(d) => format!("hold {} ms", d.as_millis()),
            Fault::CloseAtOnce => "close at once".into(),
            Fault::HalfStatusLine => "half a status line".into(),
            Fault::HalfBody => "half a body".into(),
            Fault::Canned {
                status,
                content_type,
                body,
            } => format!("{status} {content_type} ({} bytes)", body.len()),
            Fault::TruncatedSnapshot => "truncated snapshot".into(),
            Fault::OtherBase => "delta from another base".into(),
        }
    }
}

/// An answer from the real control plane: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// Fetches genuine answers from the real control plane.
struct Upstream {
    rt: tokio::runtime::Handle,
    base: String,
    http: keygate_e2e::reqwest::Client,
}

impl Upstream {
    fn get(&self, path: &str, authorization: &str) -> Option<Answer> {
        self.rt.block_on(async {
            let resp = self
                .http
                .get(format!("{}{path}", self.base))
                .header("authorization", authorization)
                .header("accept", wire::CONTENT_TYPE)
                .send()
                .await
                .ok()?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "content-length" | "transfer-encoding" | "connection"
                    )
                })
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = resp.bytes().await.ok()?.to_vec();
            Some((status, headers, body))
        })
    }
}

/// The misbehaving control plane: an HTTP/1.1 server on 127.0.0.1 (one thread per connection,
/// `Connection: close`) in front of a real control plane.
struct Misbehaving {
    base: String,
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    /// `(path asked, fault label)` of every request answered (or refused).
    served: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Misbehaving {
    fn start(cp: &ControlPlane) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let fault = Arc::new(Mutex::new(Fault::Honest));
        let served = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Upstream {
            rt: cp.runtime(),
            base: cp.base.clone(),
            http: keygate_e2e::reqwest::Client::new(),
        });
        {
            let (fault, served, stop) = (fault.clone(), served.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let current = lock(&fault).clone();
                    let (served, upstream) = (served.clone(), upstream.clone());
                    std::thread::spawn(move || answer(conn, &current, &upstream, &served));
                }
            });
        }
        Self {
            base: format!("http://{addr}"),
            addr,
            fault,
            served,
            stop,
        }
    }

    fn set(&self, fault: Fault) {
        *lock(&self.fault) = fault;
    }

    /// Requests answered under faults with this label.
    fn served(&self, label: &str) -> usize {
        lock(&self.served)
            .iter()
            .filter(|(_, l)| l == label)
            .count()
    }
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads one request head; returns `(path, authorization)`.
fn read_head(conn: &TcpStream) -> Option<(String, String)> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut authorization = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("authorization")
        {
            v.trim().clone_into(&mut authorization);
        }
    }
    Some((path, authorization))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        401 => "Unauthorized",
        403 => "Forbidden",
        500 => "Internal Server Error",
        _ => "Other",
    }
}

/// Writes a response head announcing `body.len()` bytes, then the first `send` bytes of `body`.
fn respond(
    conn: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    send: usize,
) {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body[..send.min(body.len())]);
    let _ = conn.flush();
}

/// The path without its `since` (a full snapshot is asked for).
fn snapshot_path(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn answer(
    mut conn: TcpStream,
    fault: &Fault,
    upstream: &Upstream,
    served: &Mutex<Vec<(String, String)>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Some((path, auth)) = read_head(&conn) else {
        return;
    };
    lock(served).push((path.clone(), fault.label()));
    // When the real control plane does not answer, the connection is just closed.
    let relay = |conn: &mut TcpStream, path: &str| {
        if let Some((status, headers, body)) = upstream.get(path, &auth) {
            respond(conn, status, &headers, &body, body.len());
        }
    };
    match fault {
        Fault::Honest => relay(&mut conn, &path),
        Fault::Hold(d) => {
            std::thread::sleep(*d);
            relay(&mut conn, &path);
        }
        Fault::CloseAtOnce => {}
        Fault::HalfStatusLine => {
            let _ = conn.write_all(b"HTTP/1.1 2");
        }
        Fault::HalfBody => {
            if let Some((status, headers, body)) = upstream.get(snapshot_path(&path), &auth) {
                respond(&mut conn, status, &headers, &body, body.len() / 2);
            }
        }
        Fault::Canned {
            status,
            content_type,
            body,
        } => respond(
            &mut conn,
            *status,
            &[("content-type".into(), (*content_type).into())],
            body,
            body.len(),
        ),
        Fault::TruncatedSnapshot => {
            if let Some((status, headers, mut body)) = upstream.get(snapshot_path(&path), &auth) {
                body.truncate(body.len() / 2);
                respond(&mut conn, status, &headers, &body, body.len());
            }
        }
        Fault::OtherBase => {
            let since = path
                .split_once("since=")
                .and_then(|(_, s)| s.split('&').next()?.parse::<u64>().ok());
            match since {
                Some(r) if r >= 2 => {
                    let older = format!("/v1/keyset?since={}", r - 1);
                    relay(&mut conn, &older);
                }
                _ => relay(&mut conn, &path),
            }
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// Deterministic noise (xorshift), so that a failure replays.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Each filter VM's memory limit in these tests: far above what the small key sets need, below
/// what [`trapping_request`] makes the filter allocate.
const MEMORY_CAP: usize = 32 << 20;

fn harness(server: &Misbehaving, edge_key: &str, workers: usize, extra: &str) -> Harness {
    harness_builder(workers, edge_key, extra)
        .max_memory(MEMORY_CAP)
        .cluster(CLUSTER, Cluster::http(server.base.clone()))
        .build()
        .unwrap_or_else(|e| panic!("building the harness: {e}"))
}

fn get(h: &mut Harness, worker: usize, key: &str) -> StreamOutcome {
    h.run_request_on(
        worker,
        Request::get("/repos/acme/x").header("x-api-key", key),
    )
    .unwrap_or_else(|e| panic!("run_request: {e}"))
}

fn allowed(h: &mut Harness, worker: usize, key: &str) -> bool {
    get(h, worker, key).disposition == Disposition::Completed
}

fn assert_allowed(h: &mut Harness, worker: usize, key: &str, what: &str) {
    let o = get(h, worker, key);
    assert_eq!(
        o.disposition,
        Disposition::Completed,
        "{what} (worker {worker}): {o:?}"
    );
}

fn assert_unknown(h: &mut Harness, worker: usize, key: &str, what: &str) {
    assert_eq!(
        denial(&get(h, worker, key)),
        (401, "unknown_key".into()),
        "{what} (worker {worker})"
    );
}

/// Steps virtual time by `step` until `done` holds; the virtual time it took, `None` after `max`.
fn step_until(
    h: &mut Harness,
    step: Duration,
    max: Duration,
    mut done: impl FnMut(&mut Harness) -> bool,
) -> Option<Duration> {
    let mut spent = Duration::ZERO;
    loop {
        if done(h) {
            return Some(spent);
        }
        if spent >= max {
            return None;
        }
        h.advance(step);
        spent += step;
    }
}

fn failure_counts(h: &Harness) -> BTreeMap<&'static str, u64> {
    CODES
        .iter()
        .map(|c| (*c, metric(h, &format!("keygate.sync.failure.{c}"))))
        .collect()
}

fn repo_key(cp: &ControlPlane, name: &str) -> IssuedKey {
    cp.api
        .create_key(json!({"name": name, "scopes": ["repo:read"], "owner_id": name}))
}

/// A running harness with a stable key (passes throughout) and a key revoked before any fault.
struct Setup {
    cp: ControlPlane,
    server: Misbehaving,
    h: Harness,
    workers: usize,
    stable: IssuedKey,
    revoked: IssuedKey,
}

impl Setup {
    fn start(workers: usize, extra: &str) -> Self {
        let cp = ControlPlane::start_sqlite();
        let stable = repo_key(&cp, "stable");
        let revoked = repo_key(&cp, "revoked");
        cp.api.key_action(&revoked.id, "revoke");
        let server = Misbehaving::start(&cp);
        let mut h = harness(&server, &cp.edge_key, workers, extra);
        h.advance(Duration::from_millis(500));
        for w in 0..workers {
            assert_allowed(&mut h, w, &stable.secret, "first sync");
            assert_unknown(&mut h, w, &revoked.secret, "revoked before the faults");
        }
        assert!(metric(&h, "keygate.keyset.revision") > 0);
        Self {
            cp,
            server,
            h,
            workers,
            stable,
            revoked,
        }
    }

    fn all_allow(&mut self, key: &str) -> bool {
        (0..self.workers).all(|w| allowed(&mut self.h, w, key))
    }

    /// One fault: a key the filter knows is revoked while the server misbehaves; the failure is
    /// counted under exactly `code`, the set is kept (the key still passes, the key revoked
    /// before still fails, the revision does not move); then the server is honest again and the
    /// revocation lands. Returns what a RELIABILITY row quotes.
    fn misbehave_then_recover(&mut self, fault: Fault, code: &str) -> Row {
        let label = fault.label();
        let victim = repo_key(&self.cp, "victim");
        let victim_secret = victim.secret.clone();
        // The filter learns the victim first.
        let mut spent = Duration::ZERO;
        while !self.all_allow(&victim_secret) {
            assert!(
                spent < Duration::from_secs(10),
                "[{label}] the new key never reached the filter"
            );
            self.h.advance(Duration::from_millis(50));
            spent += Duration::from_millis(50);
        }
        let revision = metric(&self.h, "keygate.keyset.revision");
        let before = failure_counts(&self.h);
        let calls_before = keyset_calls(&self.h);
        let started = Instant::now();
        self.server.set(fault);
        self.cp.api.key_action(&victim.id, "revoke");
        let counter = format!("keygate.sync.failure.{code}");
        let counted = step_until(
            &mut self.h,
            Duration::from_millis(50),
            Duration::from_secs(40),
            |h| metric(h, &counter) > before[code],
        );
        assert!(
            counted.is_some(),
            "[{label}] not counted as {code}: {:?}",
            failure_counts(&self.h)
        );
        let after = failure_counts(&self.h);
        for c in CODES {
            if c != code {
                assert_eq!(
                    after[c], before[c],
                    "[{label}] counted as {c} too: {after:?}"
                );
            }
        }
        assert_eq!(
            metric(&self.h, "keygate.keyset.revision"),
            revision,
            "[{label}] moved the revision"
        );
        for w in 0..self.workers {
            assert_allowed(&mut self.h, w, &self.stable.secret, &label);
            // The kept set predates the victim's revocation: it still passes.
            assert_allowed(&mut self.h, w, &victim_secret, &label);
            assert_unknown(&mut self.h, w, &self.revoked.secret, &label);
        }
        let warned = self
            .h
            .logs_at(LogLevel::Warn)
            .iter()
            .any(|l| l.contains(&format!("key-set sync failed ({code})")));
        assert!(warned, "[{label}] no warning names {code}");
        let answered = self.server.served(&label);
        assert!(answered >= 1, "[{label}] the server never misbehaved");
        let failures = metric(&self.h, &counter) - before[code];
        self.server.set(Fault::Honest);
        let recovered = step_until(
            &mut self.h,
            Duration::from_millis(50),
            Duration::from_secs(40),
            |h| {
                (0..h.worker_count())
                    .all(|w| get(h, w, &victim_secret).disposition == Disposition::LocalResponse)
            },
        )
        .unwrap_or_else(|| panic!("[{label}] the revocation never landed after recovery"));
        for w in 0..self.workers {
            assert_unknown(&mut self.h, w, &victim_secret, &label);
            assert_allowed(&mut self.h, w, &self.stable.secret, &label);
        }
        assert!(metric(&self.h, "keygate.keyset.revision") > revision);
        assert_eq!(
            metric(&self.h, &counter) - before[code],
            failures,
            "[{label}] failures after the server was honest again"
        );
        let row = Row {
            label,
            code: code.to_owned(),
            failures,
            answered,
            first_call_after: self
                .h
                .callouts()
                .iter()
                .filter(|c| {
                    c.request
                        .header(":path")
                        .is_some_and(|p| p.starts_with("/v1/keyset"))
                })
                .nth(calls_before + failures as usize)
                .and_then(|c| c.request.header(":path").map(str::to_owned)),
            recovered,
            real: started.elapsed(),
        };
        println!(
            "FIGURE {}: counted {} × {}, server answered {} request(s) so; revocation enforced {} ms (virtual) after the server was honest again; {} ms real",
            row.label,
            row.failures,
            row.code,
            row.answered,
            row.recovered.as_millis(),
            row.real.as_millis()
        );
        row
    }
}

/// What one fault row measured.
#[derive(Debug)]
struct Row {
    label: String,
    code: String,
    failures: u64,
    answered: usize,
    /// The key-set path of the first call after the failures.
    first_call_after: Option<String>,
    recovered: Duration,
    real: Duration,
}

#[test]
fn slow_answers_keep_the_good_set_and_a_revocation_lands_once_answers_are_prompt() {
    let mut s = Setup::start(2, FAST);
    let late = repo_key(&s.cp, "late");
    assert!(
        step_until(
            &mut s.h,
            Duration::from_millis(50),
            Duration::from_secs(5),
            |h| allowed(h, 0, &late.secret) && allowed(h, 1, &late.secret)
        )
        .is_some()
    );
    let revision = metric(&s.h, "keygate.keyset.revision");
    let before = failure_counts(&s.h);
    let hold = Fault::Hold(Duration::from_millis(1500));
    let label = hold.label();
    s.server.set(hold);
    s.cp.api.key_action(&late.id, "revoke");
    let real = Instant::now();
    s.h.advance(Duration::from_secs(5));
    let real = real.elapsed();
    let after = failure_counts(&s.h);
    // Envoy answers a timed-out call with its own 504 ("upstream request timeout"), which the
    // filter counts as `status`; a reset (below) is what it counts as `unreachable`.
    let timeouts = after["status"] - before["status"];
    assert!(timeouts >= 2, "{after:?}");
    for c in CODES.iter().filter(|c| **c != "status") {
        assert_eq!(after[c], before[c], "counted as {c}: {after:?}");
    }
    assert!(
        s.h.logs_at(LogLevel::Warn)
            .iter()
            .any(|l| l.contains("key-set sync failed (status): status 504")),
        "{:?}",
        s.h.logs_at(LogLevel::Warn)
    );
    assert!(s.server.served(&label) as u64 >= timeouts);
    assert_eq!(metric(&s.h, "keygate.keyset.revision"), revision);
    let stale = metric(&s.h, "keygate.keyset.staleness_seconds");
    assert!(stale >= 4, "staleness {stale} s after 5 s of slow answers");
    for w in 0..2 {
        assert_allowed(&mut s.h, w, &s.stable.secret, "slow answers");
        assert_allowed(
            &mut s.h,
            w,
            &late.secret,
            "revoked while slow: the kept set has it",
        );
        assert_unknown(&mut s.h, w, &s.revoked.secret, "slow answers");
    }
    s.server.set(Fault::Honest);
    let recovered = step_until(
        &mut s.h,
        Duration::from_millis(50),
        Duration::from_secs(40),
        |h| (0..2).all(|w| get(h, w, &late.secret).disposition == Disposition::LocalResponse),
    )
    .unwrap_or_else(|| panic!("the revocation never landed"));
    for w in 0..2 {
        assert_unknown(&mut s.h, w, &late.secret, "after recovery");
        assert_allowed(&mut s.h, w, &s.stable.secret, "after recovery");
    }
    assert!(metric(&s.h, "keygate.keyset.revision") > revision);
    assert!(metric(&s.h, "keygate.keyset.staleness_seconds") <= 1);
    println!(
        "FIGURE slow ({label}, timeout 300 ms): {timeouts} timeouts counted as status (504) in 5 s virtual ({} ms real), staleness reached {stale} s; revocation enforced {} ms (virtual) after answers were prompt",
        real.as_millis(),
        recovered.as_millis()
    );

    // Where the host reports a timeout as a reset instead, it is counted as `unreachable`.
    let mut h = harness_builder(1, &s.cp.edge_key, FAST)
        .cluster(CLUSTER, Cluster::http(s.server.base.clone()))
        .timeout_delivery(TimeoutDelivery::Reset)
        .build()
        .unwrap_or_else(|e| panic!("building the harness: {e}"));
    h.advance(Duration::from_millis(500));
    assert_allowed(&mut h, 0, &s.stable.secret, "reset-delivery harness");
    s.server.set(Fault::Hold(Duration::from_millis(1500)));
    h.advance(Duration::from_secs(2));
    let counts = failure_counts(&h);
    assert!(counts["unreachable"] >= 1, "{counts:?}");
    assert_eq!(counts["status"], 0, "{counts:?}");
    assert_allowed(&mut h, 0, &s.stable.secret, "reset-delivery harness, slow");
    s.server.set(Fault::Honest);
}

#[test]
fn dropped_connections_keep_the_good_set_and_count_as_unreachable() {
    let mut s = Setup::start(2, FAST);
    for fault in [Fault::CloseAtOnce, Fault::HalfStatusLine, Fault::HalfBody] {
        let row = s.misbehave_then_recover(fault, "unreachable");
        assert!(row.failures >= 1);
    }
}

#[test]
fn garbage_answers_keep_the_good_set_and_are_counted_by_kind() {
    let mut s = Setup::start(2, FAST);
    let rows: Vec<(Fault, &str)> = vec![
        (
            Fault::Canned {
                status: 200,
                content_type: wire::CONTENT_TYPE,
                body: noise(4096, 0x9e37_79b9_7f4a_7c15),
            },
            "garbled",
        ),
        (Fault::TruncatedSnapshot, "garbled"),
        (
            Fault::Canned {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: b"<!doctype html><html><body><h1>Down for maintenance</h1></body></html>"
                    .to_vec(),
            },
            "garbled",
        ),
        (
            Fault::Canned {
                status: 500,
                content_type: "application/json",
                body: br#"{"error":{"code":"INTERNAL","message":"boom"}}"#.to_vec(),
            },
            "status",
        ),
        (
            Fault::Canned {
                status: 401,
                content_type: "application/json",
                body: br#"{"error":{"code":"UNAUTHENTICATED","message":"no"}}"#.to_vec(),
            },
            "unauthorized",
        ),
        (
            Fault::Canned {
                status: 403,
                content_type: "application/json",
                body: br#"{"error":{"code":"FORBIDDEN","message":"no"}}"#.to_vec(),
            },
            "unauthorized",
        ),
        (Fault::OtherBase, "base_mismatch"),
    ];
    for (fault, code) in rows {
        let other_base = matches!(fault, Fault::OtherBase);
        let row = s.misbehave_then_recover(fault, code);
        if other_base {
            // After a delta from another base the filter asks for a full snapshot.
            assert_eq!(
                row.first_call_after.as_deref(),
                Some("/v1/keyset"),
                "{row:?}"
            );
        }
    }
}

#[test]
fn past_max_staleness_while_misbehaving_the_failure_mode_applies_then_recovers() {
    // Fail closed.
    let extra = format!(r#"{FAST},"max_staleness_s":1"#);
    let mut s = Setup::start(2, &extra);
    let victim = repo_key(&s.cp, "victim");
    assert!(
        step_until(
            &mut s.h,
            Duration::from_millis(50),
            Duration::from_secs(5),
            |h| allowed(h, 0, &victim.secret) && allowed(h, 1, &victim.secret)
        )
        .is_some()
    );
    s.server.set(Fault::CloseAtOnce);
    s.cp.api.key_action(&victim.id, "revoke");
    // Within the maximum staleness the last good set answers.
    s.h.advance(Duration::from_millis(600));
    assert_allowed(&mut s.h, 0, &s.stable.secret, "within max staleness");
    s.h.advance(Duration::from_millis(900));
    for w in 0..2 {
        assert_eq!(
            denial(&get(&mut s.h, w, &s.stable.secret)),
            (503, "keyset_stale".into()),
            "worker {w}"
        );
        assert_eq!(
            denial(&get(&mut s.h, w, &s.revoked.secret)).0,
            503,
            "worker {w}"
        );
    }
    let o = s.h.run_request_on(0, Request::get("/health")).unwrap();
    assert_eq!(
        o.disposition,
        Disposition::Completed,
        "anonymous routes pass"
    );
    assert!(decision_count(&mut s.h, "keygate.decision.deny.keyset_stale") >= 4);
    assert!(metric(&s.h, "keygate.keyset.staleness_seconds") >= 1);
    let unreachable = metric(&s.h, "keygate.sync.failure.unreachable");
    assert!(unreachable >= 1);
    s.server.set(Fault::Honest);
    let recovered = step_until(
        &mut s.h,
        Duration::from_millis(50),
        Duration::from_secs(40),
        |h| allowed(h, 0, &s.stable.secret) && allowed(h, 1, &s.stable.secret),
    )
    .unwrap_or_else(|| panic!("never recovered from keyset_stale"));
    for w in 0..2 {
        assert_unknown(&mut s.h, w, &victim.secret, "revoked during the outage");
        assert_unknown(&mut s.h, w, &s.revoked.secret, "after recovery");
    }
    assert!(metric(&s.h, "keygate.keyset.staleness_seconds") <= 1);
    println!(
        "FIGURE closed: {unreachable} unreachable, {} keyset_stale denials; keys pass again {} ms (virtual) after the server was honest",
        decision_count(&mut s.h, "keygate.decision.deny.keyset_stale"),
        recovered.as_millis()
    );

    // Fail open: a second filter on the same server.
    let mut h = harness(
        &s.server,
        &s.cp.edge_key,
        1,
        &format!(r#"{FAST},"max_staleness_s":1,"failure_mode":"open""#),
    );
    h.advance(Duration::from_millis(500));
    assert_eq!(
        get(&mut h, 0, &s.stable.secret).request_header("x-keygate-owner"),
        Some("stable")
    );
    s.server.set(Fault::HalfStatusLine);
    h.advance(Duration::from_millis(1500));
    for key in [&s.stable.secret, &s.revoked.secret] {
        let o = h
            .run_request_on(
                0,
                Request::get("/repos/acme/x")
                    .header("x-api-key", key)
                    .header("x-keygate-owner", "mallory")
                    .header("x-keygate-key-id", "key_forged"),
            )
            .unwrap();
        assert_eq!(o.disposition, Disposition::Completed, "{o:?}");
        assert_eq!(o.request_header("x-keygate-owner"), None, "no identity");
        assert_eq!(o.request_header("x-keygate-key-id"), None, "no identity");
        assert_eq!(o.request_header("x-api-key"), None, "credential hidden");
    }
    assert_eq!(
        decision_count(&mut h, "keygate.decision.allow.fail_open"),
        2
    );
    assert!(metric(&h, "keygate.sync.failure.unreachable") >= 1);
    s.server.set(Fault::Honest);
    let recovered = step_until(
        &mut h,
        Duration::from_millis(50),
        Duration::from_secs(40),
        |h| get(h, 0, &s.stable.secret).request_header("x-keygate-owner") == Some("stable"),
    )
    .unwrap_or_else(|| panic!("never recovered from failing open"));
    assert_unknown(&mut h, 0, &s.revoked.secret, "fail open, recovered");
    println!(
        "FIGURE open: identity back {} ms (virtual) after the server was honest",
        recovered.as_millis()
    );
}

/// A request whose headers do not fit in the filter VM's memory limit ([`MEMORY_CAP`]): the
/// guest's allocator cannot make room for the copy of the header map, so the REAL filter runs
/// out of memory (Rust aborts) in `proxy_on_request_headers`.
fn trapping_request(key: &str) -> Request {
    Request::get("/repos/acme/x")
        .header("x-api-key", key)
        .header("x-filler", "a".repeat(MEMORY_CAP + (8 << 20)))
}

#[test]
fn a_trapped_filter_instance_fails_closed_is_rebuilt_and_serves_the_synced_set() {
    let mut s = Setup::start(2, FAST);
    let later = repo_key(&s.cp, "later");
    assert!(
        step_until(
            &mut s.h,
            Duration::from_millis(50),
            Duration::from_secs(5),
            |h| allowed(h, 0, &later.secret) && allowed(h, 1, &later.secret)
        )
        .is_some()
    );
    // Trap the leader (the worker that calls the control plane): its lease must lapse.
    let leader = keyset_callouts(&s.h)
        .last()
        .map(|c| c.worker)
        .unwrap_or_else(|| panic!("no key-set call"));
    let other = 1 - leader;
    let followed = metric(&s.h, "keygate.sync.followed");
    let o =
        s.h.run_request_on(leader, trapping_request(&s.stable.secret))
            .unwrap();
    assert_eq!(o.disposition, Disposition::FailedClosed, "{o:?}");
    assert_eq!(o.status(), Some(503));
    assert!(o.request.is_none(), "nothing reached the upstream");
    let traps = s.h.traps();
    assert_eq!(traps.len(), 1, "{traps:?}");
    assert_eq!(traps[0].worker, leader);
    assert_eq!(traps[0].during, "proxy_on_request_headers");
    let message = format!("{:?} {}", traps[0].guest_message, traps[0].trap);
    assert!(message.contains("memory allocation"), "{message}");
    let rebuilt = s.h.worker(leader).unwrap();
    assert_eq!(rebuilt.rebuilds(), 1);
    assert!(!rebuilt.is_poisoned());
    assert_eq!(s.h.worker(other).unwrap().rebuilds(), 0);
    // The fresh instance takes the set from shared data when it is configured: no gap.
    assert!(metric(&s.h, "keygate.sync.followed") > followed);
    assert_allowed(&mut s.h, leader, &s.stable.secret, "rebuilt instance");
    assert_allowed(&mut s.h, leader, &later.secret, "rebuilt instance");
    assert_unknown(&mut s.h, leader, &s.revoked.secret, "rebuilt instance");
    assert_allowed(&mut s.h, other, &s.stable.secret, "the other worker");
    assert_eq!(
        decision_count(&mut s.h, "keygate.decision.deny.keyset_unavailable"),
        0
    );
    // Sync goes on: the dead leader's lease lapses, a worker takes it, a revocation lands.
    let calls = keyset_calls(&s.h);
    s.cp.api.key_action(&later.id, "revoke");
    let landed = step_until(
        &mut s.h,
        Duration::from_millis(50),
        Duration::from_secs(20),
        |h| (0..2).all(|w| get(h, w, &later.secret).disposition == Disposition::LocalResponse),
    )
    .unwrap_or_else(|| panic!("no revocation after the rebuild"));
    for w in 0..2 {
        assert_unknown(&mut s.h, w, &later.secret, "revoked after the rebuild");
        assert_unknown(&mut s.h, w, &s.revoked.secret, "revoked before the trap");
        assert_allowed(&mut s.h, w, &s.stable.secret, "after the rebuild");
    }
    assert!(keyset_calls(&s.h) > calls);
    assert_eq!(s.h.traps().len(), 1, "no further trap");
    let failures: u64 = failure_counts(&s.h).values().sum();
    assert_eq!(failures, 0, "{:?}", failure_counts(&s.h));
    println!(
        "FIGURE trap: worker {leader} (leader) trapped, rebuilt once, served the set at once; revocation after the trap enforced in {} ms (virtual)",
        landed.as_millis()
    );

    // Fail open: the trapping stream passes as if the filter were absent; the instance is
    // rebuilt and filters the next request.
    let mut h = harness_builder(1, &s.cp.edge_key, FAST)
        .max_memory(MEMORY_CAP)
        .cluster(CLUSTER, Cluster::http(s.server.base.clone()))
        .failure_policy(FailurePolicy::FailOpen)
        .build()
        .unwrap_or_else(|e| panic!("building the harness: {e}"));
    h.advance(Duration::from_millis(500));
    let o = h
        .run_request_on(0, trapping_request(&s.revoked.secret))
        .unwrap();
    assert_eq!(o.disposition, Disposition::FailedOpen, "{o:?}");
    assert_eq!(h.worker(0).unwrap().rebuilds(), 1);
    assert_unknown(&mut h, 0, &s.revoked.secret, "fail open, rebuilt");
    assert_allowed(&mut h, 0, &s.stable.secret, "fail open, rebuilt");
}
