//! The bounded soak (issue 8): two `keygate serve` replicas on one throwaway PostgreSQL, the
//! `keygate-gateway` process (real filter `.wasm`, long-poll sync from replica B) in front of the
//! `keygate-echo` process, all on loopback, for `KEYGATE_SOAK_SECS` seconds (default 30) of:
//!
//! - `wrk` (2 threads, 32 connections) through the gateway: thread 1 cycles through a pool of
//!   valid keys (every answer must be 200 from the echo with one of the pool's key ids), thread
//!   2 through pre-revoked and unknown keys (every answer must be 401 `unknown_key`); its Lua
//!   script counts statuses per thread and prints them from `done()`; 0 socket errors;
//! - churn: keys issued on A; every third revoked on B, every third (other) rotated with no grace
//!   alternately on A and B; each write checked right away by `POST /v1/keys/verify` on the
//!   replica that made it; a verifier calling `POST /v1/keys/verify` on both replicas for pool
//!   keys (`VALID`), pre-revoked keys (`REVOKED`) and churn keys (agreement counted); every API
//!   call must answer as expected (no 5xx, no error);
//! - a feed follower long-polling `GET /v1/keyset?since=…&wait=2` alternately on A and B,
//!   applying every answer to a `KeySet`: a delta whose base is not its revision is a gap and
//!   fails the test.
//!
//! At the end: the follower equals fresh snapshots of A and B and holds exactly the pool keys
//! and the churn keys' current secrets; the revisions followed equal the writes made; the
//! gateway denies every revoked or rotated-out secret (401 `unknown_key`) and passes every live
//! one; the resident memory (`VmRSS`) of A, B, the gateway and the echo at the end is at most
//! 1.5 × its value after warm-up + 16 MiB, and the gateway grows by at most 8 MiB + 128 bytes
//! per request served (so memory kept per request fails even the short CI run). The figures,
//! with an RSS line about every tenth of the run, are printed (`--nocapture`).
//!
//! Needs `wrk` (Debian package `wrk`) and the binaries of this build next to the test
//! executable: `cargo build -p keygate-control-plane --bin keygate -p keygate-gateway --bin
//! keygate-gateway --bin keygate-echo` (`cargo test --workspace` builds them). The documented
//! run is `KEYGATE_SOAK_SECS=300 cargo test -p keygate-e2e --test soak -- --nocapture`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use keygate_e2e::stack::built_binary;
use keygate_e2e::{ADMIN_TOKEN, ROUTES, unix_nanos};
use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::wire::MessageKind;
use keygate_protocol::{Digest, key};
use keygate_testkit::process::Supervised;
use keygate_testkit::rng::Rng;
use serde_json::{Value, json};

/// Valid keys wrk cycles through (never revoked).
const POOL: usize = 100;
/// Keys revoked before the load starts (wrk sends them; the gateway must deny them).
const PRE_REVOKED: usize = 20;
/// Well-formed keys the control plane never issued.
const UNKNOWN: usize = 10;
/// The path every key of the soak may call (`repo:read`).
const PATH: &str = "/repos/acme/widgets";
/// Pause between two issuances on A (the other churn loops follow the issuer).
const ISSUE_EVERY: Duration = Duration::from_millis(100);
/// Pause between two verifications of the verifier.
const VERIFY_EVERY: Duration = Duration::from_millis(10);
/// How long a process may take to print its listening line (PostgreSQL migrations, the
/// filter's compilation by wasmtime, on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Liveness bound for the gateway to reflect the last change (syncs every 200 ms, long-poll).
const CATCH_UP: Duration = Duration::from_secs(60);
/// Memory bound: end ≤ start × 1.5 + 16 MiB.
const RSS_FACTOR: f64 = 1.5;
const RSS_SLACK_KIB: u64 = 16 * 1024;
/// Gateway growth bound in terms of requests served: 8 MiB + 128 bytes a request.
const RETAINED_SLACK_KIB: u64 = 8 * 1024;
const RETAINED_PER_REQUEST: u64 = 128;

/// The command that builds the binaries of the soak.
const BUILD: &str = "cargo build -p keygate-control-plane --bin keygate -p keygate-gateway \
                     --bin keygate-gateway --bin keygate-echo";

/// Spawns `cmd` as `name` (output in `<dir>/<name>.stdout` and `.stderr`), waits for the
/// stdout line starting with `ready` and returns the process (its own pid, so its memory can be
/// read; killed on drop) with the rest of that line (the URL it listens on).
fn spawn(name: &str, cmd: Command, dir: &Path, ready: &str) -> (Supervised, String) {
    let mut p = Supervised::spawn(name, cmd, dir).unwrap_or_else(|e| panic!("{e}"));
    let url = p
        .wait_for_line(ready, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    (p, url)
}

/// Resident set size in KiB.
fn rss_kib(p: &Supervised) -> u64 {
    p.rss_bytes()
        .unwrap_or_else(|e| panic!("/proc status of {}: {e}", p.name()))
        / 1024
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The control plane's HTTP API as the admin.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    name: &'static str,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{path} on {}", self.name))?;
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// `POST /v1/keys` → `(id, secret)`.
    async fn create(&self, name: &str, kind: &str) -> anyhow::Result<(String, String)> {
        let (st, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/keys",
                json!({"name": name, "kind": kind, "owner_id": name, "scopes": ["repo:read"]}),
            )
            .await?;
        ensure!(st == 201, "create {name} on {}: {st} {v}", self.name);
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        Ok((
            s("/key/id").context("no id")?,
            s("/secret").context("no secret")?,
        ))
    }

    async fn revoke(&self, id: &str) -> anyhow::Result<()> {
        let (st, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/keys/{id}/revoke"),
                json!({}),
            )
            .await?;
        ensure!(st == 200, "revoke {id} on {}: {st} {v}", self.name);
        Ok(())
    }

    /// Rotation with no grace period → the new secret.
    async fn rotate(&self, id: &str) -> anyhow::Result<String> {
        let (st, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/keys/{id}/rotate"),
                json!({"grace_period": 0}),
            )
            .await?;
        ensure!(st == 200, "rotate {id} on {}: {st} {v}", self.name);
        v["secret"].as_str().map(str::to_owned).context("no secret")
    }

    /// `POST /v1/keys/verify` → the outcome code.
    async fn verify(&self, secret: &str) -> anyhow::Result<String> {
        let (st, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/keys/verify",
                json!({"key": secret}),
            )
            .await?;
        ensure!(st == 200, "verify on {}: {st} {v}", self.name);
        v["code"].as_str().map(str::to_owned).context("no code")
    }

    /// `GET /v1/keyset[?since=…&wait=…]` with the edge key: the body, `None` on 304.
    async fn keyset(
        &self,
        edge: &str,
        since: Option<u64>,
        wait: u64,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let query = since.map_or(String::new(), |r| format!("?since={r}&wait={wait}"));
        let resp = self
            .http
            .get(format!("{}/v1/keyset{query}", self.base))
            .bearer_auth(edge)
            .send()
            .await
            .with_context(|| format!("keyset on {}", self.name))?;
        match resp.status().as_u16() {
            304 => Ok(None),
            200 => Ok(Some(resp.bytes().await?.to_vec())),
            st => bail!("keyset on {}: {st}", self.name),
        }
    }

    /// A fresh snapshot as a set.
    async fn snapshot(&self, edge: &str) -> anyhow::Result<KeySet> {
        let bytes = self.keyset(edge, None, 0).await?.context("snapshot")?;
        let mut set = KeySet::new();
        set.apply(&bytes)?;
        Ok(set)
    }
}

/// A key issued during the soak.
#[derive(Debug, Clone)]
struct ChurnKey {
    id: String,
    secret: String,
    /// Secrets rotated out (no grace: dead at once).
    old: Vec<String>,
    revoked: bool,
}

#[derive(Debug, Default)]
struct Counts {
    issued: AtomicU64,
    revoked: AtomicU64,
    rotated: AtomicU64,
    verified_a: AtomicU64,
    verified_b: AtomicU64,
    churn_checks: AtomicU64,
    churn_disagreements: AtomicU64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the feed follower saw.
#[derive(Debug)]
struct Followed {
    set: KeySet,
    first: u64,
    answers: u64,
    deltas: u64,
    snapshots: u64,
    not_modified: u64,
}

/// Follows the feed alternately on A and B with `since` and long-poll from `set`.
async fn follow(ctx: Arc<Ctx>, edge: String, mut set: KeySet) -> anyhow::Result<Followed> {
    let first = set
        .revision()
        .context("the follower starts from a snapshot")?;
    let mut f = Followed {
        set: KeySet::new(),
        first,
        answers: 0,
        deltas: 0,
        snapshots: 0,
        not_modified: 0,
    };
    let mut turn = 0u64;
    while !ctx.stopped() {
        let api = ctx.alternate(turn);
        turn += 1;
        let rev = set.revision();
        let Some(bytes) = api.keyset(&edge, rev, 2).await? else {
            f.not_modified += 1;
            continue;
        };
        f.answers += 1;
        match set.apply(&bytes) {
            Ok(applied) => match applied.kind {
                MessageKind::Delta => f.deltas += 1,
                MessageKind::Snapshot => f.snapshots += 1,
            },
            Err(e @ ApplyError::BaseMismatch { .. }) => {
                bail!("a gap in the feed from {}: {e}", api.name)
            }
            Err(e) => bail!("feed answer from {} at {rev:?}: {e}", api.name),
        }
    }
    f.set = set;
    Ok(f)
}

/// What the churn loops share.
struct Ctx {
    a: Api,
    b: Api,
    pool: Vec<(String, String)>,
    pre_revoked: Vec<(String, String)>,
    churn: Mutex<Vec<ChurnKey>>,
    counts: Counts,
    stop: AtomicBool,
}

impl Ctx {
    /// Replica A on even turns, B on odd ones.
    fn alternate(&self, turn: u64) -> &Api {
        if turn.is_multiple_of(2) {
            &self.a
        } else {
            &self.b
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn verified(&self, api: &Api) -> &AtomicU64 {
        if api.name == "A" {
            &self.counts.verified_a
        } else {
            &self.counts.verified_b
        }
    }

    fn churn(&self) -> std::sync::MutexGuard<'_, Vec<ChurnKey>> {
        self.churn.lock().expect("churn lock")
    }
}

/// Issues keys on A, each checked right away on A (read-your-writes).
async fn issuer(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let mut n = 0;
    while !ctx.stopped() {
        let (id, secret) = ctx.a.create(&format!("churn-{n}"), "workspace").await?;
        add(&ctx.counts.issued);
        let code = ctx.a.verify(&secret).await?;
        add(&ctx.counts.verified_a);
        ensure!(
            code == "VALID",
            "{id} right after its issuance on A: {code}"
        );
        ctx.churn().push(ChurnKey {
            id,
            secret,
            old: Vec::new(),
            revoked: false,
        });
        n += 1;
        tokio::time::sleep(ISSUE_EVERY).await;
    }
    Ok(())
}

/// Revokes every key `i ≡ 0 (mod 3)` on B and rotates every key `i ≡ 1 (mod 3)` (no grace)
/// alternately on A and B, in issuance order; each change checked right away on its replica.
async fn changer(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let mut next = 0;
    let mut rotations = 0u64;
    while !ctx.stopped() {
        let Some(k) = ctx.churn().get(next).cloned() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match next % 3 {
            0 => {
                ctx.b.revoke(&k.id).await?;
                add(&ctx.counts.revoked);
                ctx.churn()[next].revoked = true;
                let code = ctx.b.verify(&k.secret).await?;
                add(&ctx.counts.verified_b);
                ensure!(
                    code == "REVOKED",
                    "{} right after its revocation on B: {code}",
                    k.id
                );
            }
            1 => {
                let api = ctx.alternate(rotations);
                rotations += 1;
                let secret = api.rotate(&k.id).await?;
                add(&ctx.counts.rotated);
                {
                    let mut c = ctx.churn();
                    let old = std::mem::replace(&mut c[next].secret, secret.clone());
                    c[next].old.push(old);
                }
                let new_code = api.verify(&secret).await?;
                let old_code = api.verify(&k.secret).await?;
                add(ctx.verified(api));
                add(ctx.verified(api));
                ensure!(
                    new_code == "VALID",
                    "{} rotated on {}: new secret {new_code}",
                    k.id,
                    api.name
                );
                ensure!(
                    old_code != "VALID",
                    "{} rotated on {} without grace: the old secret is still VALID",
                    k.id,
                    api.name
                );
            }
            _ => {}
        }
        next += 1;
    }
    Ok(())
}

/// Verifies on A and B in turn: a pool key (`VALID`), a pre-revoked key (`REVOKED`), a churn
/// key (counted against its last acknowledged state; a change in flight or not yet notified to
/// the other replica disagrees, so only counted).
async fn verifier(ctx: Arc<Ctx>, mut rng: Rng) -> anyhow::Result<()> {
    let mut turn = 0u64;
    while !ctx.stopped() {
        let api = ctx.alternate(turn);
        turn += 1;
        let (id, secret) = &ctx.pool[rng.below(ctx.pool.len())];
        let code = api.verify(secret).await?;
        add(ctx.verified(api));
        ensure!(code == "VALID", "pool key {id} on {}: {code}", api.name);
        let (id, secret) = &ctx.pre_revoked[rng.below(ctx.pre_revoked.len())];
        let code = api.verify(secret).await?;
        add(ctx.verified(api));
        ensure!(
            code == "REVOKED",
            "pre-revoked key {id} on {}: {code}",
            api.name
        );
        let picked = {
            let c = ctx.churn();
            (!c.is_empty()).then(|| c[rng.below(c.len())].clone())
        };
        if let Some(k) = picked {
            let code = api.verify(&k.secret).await?;
            add(ctx.verified(api));
            add(&ctx.counts.churn_checks);
            let want = if k.revoked { "REVOKED" } else { "VALID" };
            if code != want {
                add(&ctx.counts.churn_disagreements);
            }
        }
        tokio::time::sleep(VERIFY_EVERY).await;
    }
    Ok(())
}

/// One wrk run's figures.
#[derive(Debug, Default)]
struct Wrk {
    requests: u64,
    rps: f64,
    p50: String,
    p99: String,
    socket_errors: Option<String>,
    /// Per thread: `(kind, s200, s401, other, wrong)`.
    threads: Vec<(String, u64, u64, u64, u64)>,
    text: String,
}

fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let find = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let requests = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().to_owned())
        })
        .context("wrk: no request total")?
        .parse()?;
    let mut threads = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("SOAK ")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .unwrap_or_default()
                .to_owned()
        };
        let num = |name: &str| field(name).parse::<u64>().unwrap_or(u64::MAX);
        threads.push((
            field("kind"),
            num("s200"),
            num("s401"),
            num("other"),
            num("wrong"),
        ));
    }
    Ok(Wrk {
        requests,
        rps: find("Requests/sec:")
            .context("wrk: no Requests/sec")?
            .parse()?,
        p50: find("50%").unwrap_or_default(),
        p99: find("99%").unwrap_or_default(),
        socket_errors: find("Socket errors:"),
        threads,
        text: text.to_owned(),
    })
}

/// The wrk script: thread 1 sends the valid keys, thread 2 the revoked and unknown ones; each
/// thread counts statuses and wrong answers, printed from `done()`.
fn wrk_script(valid: &[(String, String)], bad: &[String]) -> String {
    let list = |items: &mut dyn Iterator<Item = &String>| {
        items
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(",\n  ")
    };
    let valid_keys = list(&mut valid.iter().map(|(_, s)| s));
    let valid_ids = valid
        .iter()
        .map(|(id, _)| format!("[{id:?}] = true"))
        .collect::<Vec<_>>()
        .join(",\n  ");
    let bad_keys = list(&mut bad.iter());
    format!(
        r#"-- Generated by tests/tests/soak.rs.
local valid = {{
  {valid_keys}
}}
local valid_ids = {{
  {valid_ids}
}}
local bad = {{
  {bad_keys}
}}
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
  thread:set("kind", #threads == 1 and "valid" or "bad")
end
function init(args)
  n = 0; s200 = 0; s401 = 0; other = 0; wrong = 0
  keys = kind == "valid" and valid or bad
end
function request()
  n = n + 1
  return wrk.format("GET", "{PATH}", {{ ["x-api-key"] = keys[(n % #keys) + 1] }})
end
function response(status, headers, body)
  if status == 200 then
    s200 = s200 + 1
    local id = string.match(body, '"x%-keygate%-key%-id"%s*:%s*"(key_%x+)"')
    if kind ~= "valid" or not id or not valid_ids[id] then wrong = wrong + 1 end
  elseif status == 401 then
    s401 = s401 + 1
    if kind ~= "bad" or not string.find(body, "unknown_key", 1, true) then wrong = wrong + 1 end
  else
    other = other + 1
  end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("SOAK kind=%s s200=%d s401=%d other=%d wrong=%d\n",
      t:get("kind"), t:get("s200"), t:get("s401"), t:get("other"), t:get("wrong")))
  end
end
"#
    )
}

/// `GET PATH` through the gateway with `key` → `(status, error code)`.
async fn through(
    http: &reqwest::Client,
    gateway: &str,
    key: &str,
) -> anyhow::Result<(u16, String)> {
    let resp = http
        .get(format!("{gateway}{PATH}"))
        .header("x-api-key", key)
        .send()
        .await
        .context("GET through the gateway")?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    Ok((
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Checks every `(secret, expected status)` at the gateway twice (both workers, round robin);
/// `Err` names the first mismatch.
async fn gateway_agrees(
    http: &reqwest::Client,
    gateway: &str,
    expect: &[(String, u16, String)],
) -> anyhow::Result<Result<(), String>> {
    for (secret, status, what) in expect {
        for _ in 0..2 {
            let (got, code) = through(http, gateway, secret).await?;
            let ok = got == *status && (got != 401 || code == "unknown_key");
            if !ok {
                return Ok(Err(format!("{what}: {got} {code}, want {status}")));
            }
        }
    }
    Ok(Ok(()))
}

async fn wait_gateway(
    http: &reqwest::Client,
    gateway: &str,
    expect: &[(String, u16, String)],
    what: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        match gateway_agrees(http, gateway, expect).await? {
            Ok(()) => return Ok(started.elapsed()),
            Err(last) if started.elapsed() > CATCH_UP => {
                bail!("{what}: the gateway did not agree within {CATCH_UP:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rss {
    a: u64,
    b: u64,
    gateway: u64,
    echo: u64,
}

fn rss(procs: &[&Supervised; 4]) -> Rss {
    Rss {
        a: rss_kib(procs[0]),
        b: rss_kib(procs[1]),
        gateway: rss_kib(procs[2]),
        echo: rss_kib(procs[3]),
    }
}

/// The soak's fixture: two replicas on one fresh PostgreSQL database, the echo, the keys (the
/// edge key and the pool on A, the pre-revoked ones issued on A and revoked on B, unknown ones
/// never issued) and the gateway syncing from B, agreeing with every one of them.
struct Soak {
    secs: u64,
    seed: u64,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    a: Api,
    b: Api,
    proc_a: Supervised,
    proc_b: Supervised,
    proc_echo: Supervised,
    proc_gw: Supervised,
    url_gw: String,
    edge: String,
    unknown: Vec<String>,
    /// The revision after setup.
    rev0: u64,
    /// What the churn loops share (the pool and the pre-revoked keys among it).
    ctx: Arc<Ctx>,
}

/// What the load phase measured.
struct Load {
    wrk: Wrk,
    follower: Followed,
    warm_up: Duration,
    rss_start: Rss,
    rss_end: Rss,
    rss_peak: Rss,
    load_start: String,
    load_end: String,
}

/// The feed once caught up after the load, and the churn it followed.
struct Feed {
    churn: Vec<ChurnKey>,
    followed: KeySet,
    last: u64,
    issued: u64,
    revoked: u64,
    rotated: u64,
}

impl Feed {
    fn live(&self) -> Vec<&ChurnKey> {
        self.churn.iter().filter(|k| !k.revoked).collect()
    }

    /// Every revoked or rotated-out secret, the pre-revoked ones included: `(id, secret)`.
    fn dead<'a>(&'a self, pre_revoked: &'a [(String, String)]) -> Vec<(&'a String, &'a String)> {
        self.churn
            .iter()
            .flat_map(|k| {
                k.old
                    .iter()
                    .chain(k.revoked.then_some(&k.secret))
                    .map(move |s| (&k.id, s))
            })
            .chain(pre_revoked.iter().map(|(id, s)| (id, s)))
            .collect()
    }
}

impl Soak {
    /// Setup: the processes, the keys, and the gateway's first sync.
    fn start(secs: u64) -> anyhow::Result<Self> {
        let keygate = built_binary("keygate", BUILD);
        let gateway_bin = built_binary("keygate-gateway", BUILD);
        let echo_bin = built_binary("keygate-echo", BUILD);
        let dir = tempfile::Builder::new().prefix("keygate-soak-").tempdir()?;
        let seed = unix_nanos() | 1;
        println!(
            "soak: {secs} s, seed {seed}, load average at setup {}",
            load_average()
        );
        let setup_started = Instant::now();

        let database_url = keygate_testkit::PgCluster::shared()
            .fresh_database()
            .context("fresh PostgreSQL database")?;
        let serve = || {
            let mut c = Command::new(&keygate);
            c.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &database_url,
            ])
            .env("KEYGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn");
            c
        };
        let (proc_a, url_a) = spawn("replica-a", serve(), dir.path(), "keygate listening on ");
        let (proc_b, url_b) = spawn("replica-b", serve(), dir.path(), "keygate listening on ");
        let mut echo_cmd = Command::new(&echo_bin);
        echo_cmd.args(["--listen", "127.0.0.1:0"]);
        let (proc_echo, url_echo) =
            spawn("echo", echo_cmd, dir.path(), "keygate-echo listening on ");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let a = Api {
            http: http.clone(),
            base: url_a.clone(),
            name: "A",
        };
        let b = Api {
            http: http.clone(),
            base: url_b.clone(),
            name: "B",
        };

        // Keys: the edge key and the pool on A, the pre-revoked ones issued on A and revoked
        // on B, unknown ones never issued.
        let (edge, pool, pre_revoked) = rt.block_on(async {
            let (_, edge) = a.create("soak-edge", "edge").await?;
            let mut pool = Vec::new();
            for i in 0..POOL {
                pool.push(a.create(&format!("pool-{i}"), "workspace").await?);
            }
            let mut revoked = Vec::new();
            for i in 0..PRE_REVOKED {
                let k = a.create(&format!("revoked-{i}"), "workspace").await?;
                b.revoke(&k.0).await?;
                revoked.push(k);
            }
            anyhow::Ok((edge, pool, revoked))
        })?;
        let prefix = key::parse(&pool[0].1)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .prefix()
            .to_owned();
        let unknown: Vec<String> = (0..UNKNOWN)
            .map(|_| key::generate(&prefix).map(|k| k.expose_secret().to_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        // The gateway: the real filter, syncing from B with long-poll.
        let routes: Value = serde_json::from_str(ROUTES)?;
        let config = json!({
            "cluster": "keygate_control_plane",
            "authority": url_b.trim_start_matches("http://"),
            "edge_key": edge,
            "sync_interval_ms": 200,
            "long_poll_wait_s": 5,
            "routes": routes,
        });
        let config_path = dir.path().join("plugin.json");
        std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
        let mut gw_cmd = Command::new(&gateway_bin);
        gw_cmd
            .arg("--config")
            .arg(&config_path)
            .args([
                "--upstream",
                &url_echo,
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
            ])
            .arg("--cluster")
            .arg(format!("keygate_control_plane={url_b}"))
            .env("RUST_LOG", "warn");
        let (proc_gw, url_gw) = spawn(
            "gateway",
            gw_cmd,
            dir.path(),
            "keygate-gateway listening on ",
        );

        let mut before: Vec<(String, u16, String)> = pool
            .iter()
            .map(|(id, s)| (s.clone(), 200, format!("pool key {id}")))
            .collect();
        before.extend(
            pre_revoked
                .iter()
                .map(|(id, s)| (s.clone(), 401, format!("pre-revoked {id}"))),
        );
        before.extend(
            unknown
                .iter()
                .map(|s| (s.clone(), 401, "unknown key".to_owned())),
        );
        let first_sync = rt.block_on(wait_gateway(&http, &url_gw, &before, "the first sync"))?;
        let rev0 = rt
            .block_on(a.snapshot(&edge))?
            .revision()
            .context("revision")?;
        println!(
            "setup: {POOL} pool keys, {PRE_REVOKED} pre-revoked, {UNKNOWN} unknown; revision \
             {rev0}; gateway agreed {first_sync:.1?} after starting; setup took {:.1?}",
            setup_started.elapsed()
        );
        let ctx = Arc::new(Ctx {
            a: a.clone(),
            b: b.clone(),
            pool,
            pre_revoked,
            churn: Mutex::default(),
            counts: Counts::default(),
            stop: AtomicBool::new(false),
        });
        Ok(Self {
            secs,
            seed,
            dir,
            rt,
            http,
            a,
            b,
            proc_a,
            proc_b,
            proc_echo,
            proc_gw,
            url_gw,
            edge,
            unknown,
            rev0,
            ctx,
        })
    }

    /// The load: wrk through the gateway, the churn loops and the feed follower for `secs`
    /// seconds, memory sampled after warm-up, every 2 s and at the end.
    fn run_load(&self) -> anyhow::Result<Load> {
        let (secs, rev0, edge, ctx) = (self.secs, self.rev0, &self.edge, &self.ctx);
        let script = self.dir.path().join("soak.lua");
        let mut bad: Vec<String> = ctx.pre_revoked.iter().map(|(_, s)| s.clone()).collect();
        bad.extend(self.unknown.iter().cloned());
        std::fs::File::create(&script)?.write_all(wrk_script(&ctx.pool, &bad).as_bytes())?;
        let load_start = load_average();
        let warm_up = Duration::from_secs(5.min(secs / 3));

        let (wrk_out, tasks, rss_start, rss_end, rss_peak, follower) = self.rt.block_on(async {
            let first = self.a.snapshot(edge).await?;
            ensure!(
                first.revision() == Some(rev0),
                "no write between setup and load"
            );
            let follower = tokio::spawn(follow(ctx.clone(), edge.clone(), first));
            let wrk = tokio::process::Command::new("wrk")
                .args(["-t2", "-c32", "--timeout", "10s", "--latency"])
                .arg(format!("-d{secs}s"))
                .arg("-s")
                .arg(&script)
                .arg(&self.url_gw)
                .stdin(Stdio::null())
                .output();
            let wrk = tokio::spawn(wrk);
            let tasks = vec![
                tokio::spawn(issuer(ctx.clone())),
                tokio::spawn(changer(ctx.clone())),
                tokio::spawn(verifier(ctx.clone(), Rng::new(self.seed))),
            ];
            let started = Instant::now();
            tokio::time::sleep(warm_up).await;
            let procs = [&self.proc_a, &self.proc_b, &self.proc_gw, &self.proc_echo];
            let rss_start = rss(&procs);
            let mut peak = rss_start;
            // Peaks, every 2 s, while wrk runs (and the churn loops; one failing stops the
            // wait), and a line about every tenth of the run.
            let line_every = Duration::from_secs((secs / 10).max(2));
            let mut next_line = started + warm_up;
            while !wrk.is_finished() && !tasks.iter().any(|t| t.is_finished()) {
                let now = rss(&procs);
                if Instant::now() >= next_line {
                    println!(
                        "t={:>3.0} s, RSS MiB: A {:.1}, B {:.1}, gateway {:.1}, echo {:.1}; {} \
                         issued",
                        started.elapsed().as_secs_f64().round(),
                        now.a as f64 / 1024.0,
                        now.b as f64 / 1024.0,
                        now.gateway as f64 / 1024.0,
                        now.echo as f64 / 1024.0,
                        ctx.counts.issued.load(Ordering::Relaxed)
                    );
                    next_line += line_every;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                peak = Rss {
                    a: peak.a.max(now.a),
                    b: peak.b.max(now.b),
                    gateway: peak.gateway.max(now.gateway),
                    echo: peak.echo.max(now.echo),
                };
            }
            let rss_end = rss(&procs);
            let elapsed = started.elapsed();
            ctx.stop.store(true, Ordering::Relaxed);
            let wrk_out = wrk.await??;
            let mut done = Vec::new();
            for t in tasks {
                done.push(t.await?);
            }
            println!("load ran {elapsed:.1?}");
            anyhow::Ok((wrk_out, done, rss_start, rss_end, peak, follower.await?))
        })?;
        let load_end = load_average();
        for t in tasks {
            t?;
        }
        let follower = follower?;
        let wrk_text = String::from_utf8_lossy(&wrk_out.stdout).into_owned();
        ensure!(
            wrk_out.status.success(),
            "wrk failed: {wrk_text}{}",
            String::from_utf8_lossy(&wrk_out.stderr)
        );
        Ok(Load {
            wrk: parse_wrk(&wrk_text)?,
            follower,
            warm_up,
            rss_start,
            rss_end,
            rss_peak,
            load_start,
            load_end,
        })
    }

    /// The feed: caught up with `since` only, it equals fresh snapshots of A and B, and the
    /// revisions it followed are exactly the writes made; it holds exactly the pool keys and
    /// the churn keys' current secrets.
    fn check_feed(&self, follower: &Followed) -> anyhow::Result<Feed> {
        let (a, b, edge, rev0) = (&self.a, &self.b, &self.edge, self.rev0);
        let churn = self.ctx.churn().clone();
        let (counts, pool) = (&self.ctx.counts, &self.ctx.pool);
        let (followed, snap_a, snap_b) = self.rt.block_on(async {
            let mut set = follower.set.clone();
            let mut api = [a, b].into_iter().cycle();
            let mut quiet = 0;
            while quiet < 2 {
                let api = api.next().context("cycle")?;
                match api.keyset(edge, set.revision(), 0).await? {
                    None => quiet += 1,
                    Some(bytes) => {
                        set.apply(&bytes)
                            .with_context(|| format!("catching up from {}", api.name))?;
                        quiet = 0;
                    }
                }
            }
            anyhow::Ok((set, a.snapshot(edge).await?, b.snapshot(edge).await?))
        })?;
        let issued = counts.issued.load(Ordering::Relaxed);
        let revoked = counts.revoked.load(Ordering::Relaxed);
        let rotated = counts.rotated.load(Ordering::Relaxed);
        ensure!(issued as usize == churn.len(), "every issuance recorded");
        let last = followed.revision().context("revision")?;
        ensure!(
            snap_a.revision() == Some(last),
            "A's snapshot at {:?}, follower at {last}",
            snap_a.revision()
        );
        ensure!(
            snap_b.revision() == Some(last),
            "B's snapshot at {:?}, follower at {last}",
            snap_b.revision()
        );
        ensure!(
            followed.encode_snapshot() == snap_a.encode_snapshot(),
            "the follower equals A's snapshot"
        );
        ensure!(
            followed.encode_snapshot() == snap_b.encode_snapshot(),
            "the follower equals B's snapshot"
        );
        ensure!(
            last - rev0 == issued + revoked + rotated,
            "revisions {rev0} → {last} ({}) vs writes: {issued} issued + {revoked} revoked + \
             {rotated} rotated",
            last - rev0
        );
        let feed = Feed {
            churn,
            followed,
            last,
            issued,
            revoked,
            rotated,
        };
        let live = feed.live();
        ensure!(
            feed.followed.len() == POOL + live.len(),
            "the set holds {} keys, want {POOL} pool + {} live churn keys",
            feed.followed.len(),
            live.len()
        );
        for (id, secret) in pool
            .iter()
            .map(|(id, s)| (id, s))
            .chain(live.iter().map(|k| (&k.id, &k.secret)))
        {
            let found = feed.followed.lookup(&Digest::of(secret));
            ensure!(
                found.is_some_and(|k| k.key_id().to_string() == *id),
                "{id}'s secret in the followed set"
            );
        }
        for (id, secret) in &feed.dead(&self.ctx.pre_revoked) {
            ensure!(
                feed.followed.lookup(&Digest::of(secret)).is_none(),
                "a dead secret of {id} in the set"
            );
        }
        Ok(feed)
    }

    /// The gateway, once caught up, passes every live secret and denies every dead one; both
    /// replicas answer the same for every churn key. Returns how long the gateway took and the
    /// churn keys checked on A and on B.
    fn check_gateway_and_replicas(&self, feed: &Feed) -> anyhow::Result<(Duration, u64, u64)> {
        let mut expect: Vec<(String, u16, String)> = feed
            .live()
            .iter()
            .map(|k| (k.secret.clone(), 200, format!("live churn key {}", k.id)))
            .collect();
        expect.extend(
            feed.dead(&self.ctx.pre_revoked)
                .iter()
                .map(|(id, s)| ((*s).clone(), 401, format!("dead secret of {id}"))),
        );
        expect.extend(
            self.ctx
                .pool
                .iter()
                .map(|(id, s)| (s.clone(), 200, format!("pool key {id}"))),
        );
        let caught_up = self.rt.block_on(wait_gateway(
            &self.http,
            &self.url_gw,
            &expect,
            "after the soak",
        ))?;
        // Both replicas answer the same for every churn key now.
        let (cross_a, cross_b) = self.rt.block_on(async {
            let mut n = (0, 0);
            for k in &feed.churn {
                let want = if k.revoked { "REVOKED" } else { "VALID" };
                for (api, count) in [(&self.a, &mut n.0), (&self.b, &mut n.1)] {
                    let code = api.verify(&k.secret).await?;
                    *count += 1;
                    ensure!(
                        code == want,
                        "{} on {} after the soak: {code}, want {want}",
                        k.id,
                        api.name
                    );
                }
            }
            anyhow::Ok(n)
        })?;
        Ok((caught_up, cross_a, cross_b))
    }

    /// The processes: still up, no panic in their logs; memory flat (each within 1.5 × its
    /// value after warm-up + 16 MiB, the gateway within 8 MiB + 128 bytes a request); distinct
    /// churn key ids.
    fn check_processes_and_memory(&mut self, load: &Load, feed: &Feed) -> anyhow::Result<()> {
        for p in [
            &mut self.proc_a,
            &mut self.proc_b,
            &mut self.proc_gw,
            &mut self.proc_echo,
        ] {
            ensure!(p.is_running(), "{} exited:\n{}", p.name(), p.logs());
            ensure!(
                !p.logs().contains("panicked"),
                "{} panicked:\n{}",
                p.name(),
                p.logs()
            );
        }
        let mib = |k: u64| k as f64 / 1024.0;
        let (rss_start, rss_end, rss_peak) = (load.rss_start, load.rss_end, load.rss_peak);
        let rows = [
            ("replica A", rss_start.a, rss_end.a, rss_peak.a),
            ("replica B", rss_start.b, rss_end.b, rss_peak.b),
            (
                "gateway",
                rss_start.gateway,
                rss_end.gateway,
                rss_peak.gateway,
            ),
            ("echo", rss_start.echo, rss_end.echo, rss_peak.echo),
        ];
        for (name, start, end, peak) in rows {
            println!(
                "memory {name}: {:.1} MiB after warm-up ({:?}), {:.1} MiB at the end, peak {:.1} \
                 MiB",
                mib(start),
                load.warm_up,
                mib(end),
                mib(peak)
            );
        }
        for (name, start, end, _) in rows {
            let bound = (start as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB;
            ensure!(
                end <= bound,
                "{name}'s memory grew: {start} KiB → {end} KiB (bound {bound} KiB)"
            );
        }
        // Memory kept per request is a leak whatever the run's length or throughput: the
        // gateway may not grow by more than 8 MiB plus 128 bytes per request served.
        let requests = load.wrk.requests;
        let per_request_bound = RETAINED_SLACK_KIB + requests * RETAINED_PER_REQUEST / 1024;
        ensure!(
            rss_end.gateway.saturating_sub(rss_start.gateway) <= per_request_bound,
            "the gateway keeps memory per request: {} KiB → {} KiB over {} requests ({:.0} bytes \
             a request; bound {per_request_bound} KiB)",
            rss_start.gateway,
            rss_end.gateway,
            requests,
            rss_end.gateway.saturating_sub(rss_start.gateway) as f64 * 1024.0 / requests as f64
        );
        let ids: BTreeSet<&str> = feed.churn.iter().map(|k| k.id.as_str()).collect();
        ensure!(ids.len() == feed.churn.len(), "distinct key ids");
        Ok(())
    }
}

/// wrk: no socket error, and the status mix is exactly as the keys say.
fn check_wrk(w: &Wrk) -> anyhow::Result<()> {
    let total: u64 = w.threads.iter().map(|t| t.1 + t.2 + t.3).sum();
    println!("{}", w.text);
    ensure!(
        w.socket_errors.is_none(),
        "wrk socket errors: {:?}",
        w.socket_errors
    );
    ensure!(
        w.threads.len() == 2,
        "wrk printed per-thread counts: {}",
        w.text
    );
    for (kind, s200, s401, other, wrong) in &w.threads {
        ensure!(
            *other == 0 && *wrong == 0,
            "wrk thread {kind}: {other} other statuses, {wrong} wrong answers"
        );
        match kind.as_str() {
            "valid" => ensure!(
                *s200 > 0 && *s401 == 0,
                "valid keys: {s200} × 200, {s401} × 401"
            ),
            _ => ensure!(
                *s401 > 0 && *s200 == 0,
                "bad keys: {s200} × 200, {s401} × 401"
            ),
        }
    }
    ensure!(
        total == w.requests,
        "answers counted {total} vs wrk's total {}",
        w.requests
    );
    Ok(())
}

/// `KEYGATE_SOAK_SECS` (default 30, at least 5), and wrk installed.
fn soak_secs() -> anyhow::Result<u64> {
    let secs: u64 = std::env::var("KEYGATE_SOAK_SECS")
        .ok()
        .map(|v| {
            v.parse()
                .context("KEYGATE_SOAK_SECS is a number of seconds")
        })
        .transpose()?
        .unwrap_or(30);
    ensure!(secs >= 5, "KEYGATE_SOAK_SECS must be at least 5");
    match Command::new("wrk").arg("--version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("wrk is not installed: `apt-get install -y wrk` (Debian package wrk)")
        }
        other => {
            other.context("running wrk --version")?;
        }
    }
    Ok(secs)
}

/// One long run by nature, so one test; its phases are the functions above: setup, load, feed,
/// gateway and replicas, wrk's counts, processes and memory, then the figures.
#[test]
fn bounded_soak_two_postgres_replicas_and_the_gateway_under_wrk() -> anyhow::Result<()> {
    let secs = soak_secs()?;
    let mut soak = Soak::start(secs)?;
    let load = soak.run_load()?;
    let feed = soak.check_feed(&load.follower)?;
    let (caught_up, cross_a, cross_b) = soak.check_gateway_and_replicas(&feed)?;
    let w = &load.wrk;
    check_wrk(w)?;
    soak.check_processes_and_memory(&load, &feed)?;
    let counts = &soak.ctx.counts;
    let (issued, revoked, rotated, last) = (feed.issued, feed.revoked, feed.rotated, feed.last);
    let (seed, rev0, follower) = (soak.seed, soak.rev0, &load.follower);
    let (load_start, load_end) = (&load.load_start, &load.load_end);
    let verified =
        counts.verified_a.load(Ordering::Relaxed) + counts.verified_b.load(Ordering::Relaxed);
    println!(
        "soak figures ({secs} s, seed {seed}):\n\
         wrk: {} requests, {:.0} req/s, p50 {}, p99 {}, socket errors none; valid keys {} × 200, \
         revoked/unknown keys {} × 401, other 0, wrong 0\n\
         API: {issued} issued (A), {revoked} revoked (B), {rotated} rotated (A/B), {verified} \
         verified (A {}, B {}; churn keys checked in flight {} with {} disagreements, after \
         the soak {cross_a} on A and {cross_b} on B all agreeing), errors 0\n\
         feed: revisions {rev0} → {last} ({} followed), {} answers ({} deltas, {} snapshots, \
         {} × 304) alternating A/B, gaps 0; equals fresh snapshots of A and B ({} keys)\n\
         gateway caught up {caught_up:.1?} after the load stopped\n\
         load average: start {load_start}, end {load_end}",
        w.requests,
        w.rps,
        w.p50,
        w.p99,
        w.threads.iter().map(|t| t.1).sum::<u64>(),
        w.threads.iter().map(|t| t.2).sum::<u64>(),
        counts.verified_a.load(Ordering::Relaxed),
        counts.verified_b.load(Ordering::Relaxed),
        counts.churn_checks.load(Ordering::Relaxed),
        counts.churn_disagreements.load(Ordering::Relaxed),
        last - follower.first,
        follower.answers,
        follower.deltas,
        follower.snapshots,
        follower.not_modified,
        feed.followed.len(),
    );
    Ok(())
}
