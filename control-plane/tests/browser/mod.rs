//! Browser-driving helpers for the console's tests (`tests/console.rs`), in one place: the real
//! `keygate serve` binary on a free port ([`Console`], through `test_support::ServeProcess`),
//! Debian's headless `chromium` driven over WebDriver by `chromedriver` and fantoccini
//! ([`Browser`]), screenshots ([`screenshots_dir`]: `target/`, or `docs/screenshots/` with
//! `KEYGATE_UPDATE_SCREENSHOTS=1`), and the API calls the scenarios set up
//! with. Every process is killed on drop (chromedriver with every process that inherited its
//! tag, [`Group`]), so a failing test leaves no chromium, chromedriver or control plane running.
//! A missing browser fails with the command that installs it.

#![allow(dead_code)] // each test binary uses its own subset

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use keygate_control_plane::test_support::ServeProcess;
use serde_json::{Value, json};

/// The admin token every [`Console`] starts with.
pub const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789";

/// The prefix of the keys a [`Console`] issues (the screenshots show it: not `kg_live`).
pub const KEY_PREFIX: &str = "kg_demo";

/// One browser test at a time: each starts a chromium, and the machine has two cores.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Marks every process a test starts (inherited by its children, chromium's helpers too) so
/// that [`Group`]'s drop can find them all, also those that left the process group or were
/// reparented (chromium's crash handler daemonizes).
const TAG_VAR: &str = "KEYGATE_CONSOLE_TEST_TAG";

/// A child process in its own process group with a unique [`TAG_VAR`]; on drop every process
/// carrying that tag is killed.
struct Group {
    child: Child,
    tag: String,
}

impl Group {
    fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let child = cmd.env(TAG_VAR, &tag).process_group(0).spawn()?;
        Ok(Self { child, tag })
    }

    /// The processes whose environment carries this group's tag.
    fn tagged(&self) -> Vec<u32> {
        let needle = format!("{TAG_VAR}={}\0", self.tag);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
            })
            .collect()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..3 {
            let left = self.tagged();
            if left.is_empty() {
                break;
            }
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(left.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `keygate serve` (the binary cargo built for this test, as the crate's shared
/// [`ServeProcess`]) on 127.0.0.1 with a fresh SQLite file, [`ADMIN_TOKEN`] and [`KEY_PREFIX`].
pub struct Console {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _process: ServeProcess,
}

impl Console {
    /// Starts it and waits for its listening line.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Console::start`] with more `keygate serve` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite:{}", dir.path().join("keygate.db").display());
        let process = ServeProcess::start(
            env!("CARGO_BIN_EXE_keygate"),
            dir.path(),
            "console",
            |cmd| {
                cmd.args(["--database-url", &db, "--admin-token", ADMIN_TOKEN])
                    .args(["--key-prefix", KEY_PREFIX])
                    .args(extra);
            },
        )
        .keep(dir);
        Self {
            base: process.base(),
            _process: process,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a key through the API as `token`; returns the answer (`secret`, `key`).
    pub async fn api_create(&self, token: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .post(self.url("/v1/keys"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("POST /v1/keys");
        assert_eq!(resp.status(), 201, "create {body}");
        resp.json().await.expect("JSON")
    }

    /// `POST <path>` as the admin with an empty body (suspend, reactivate, revoke).
    pub async fn api_post(&self, path: &str) {
        let resp = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("POST");
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
    }

    /// A key's status as the API (admin) reports it.
    pub async fn api_status(&self, id: &str) -> String {
        let v: Value = reqwest::Client::new()
            .get(self.url(&format!("/v1/keys/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET /v1/keys/{id}")
            .json()
            .await
            .expect("JSON");
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Reports usage as an edge's filter does: `POST /v1/usage` with the `edge` key `edge`,
    /// `(key id, count, last used at)` per entry; asserts the batch was applied.
    pub async fn report_usage(&self, edge: &str, batch_id: &str, entries: &[(&str, u64, i64)]) {
        let entries: Vec<Value> = entries
            .iter()
            .map(|(id, count, at)| json!({"key_id": id, "count": count, "last_used_at": at}))
            .collect();
        let resp = reqwest::Client::new()
            .post(self.url("/v1/usage"))
            .bearer_auth(edge)
            .json(&json!({"batch_id": batch_id, "entries": entries}))
            .send()
            .await
            .expect("POST /v1/usage");
        assert_eq!(resp.status(), 200, "usage report");
        let v: Value = resp.json().await.expect("JSON");
        assert_eq!(v["applied"], true, "{v}");
    }

    /// The key set's current revision, as an edge reads it (`x-keygate-revision`).
    pub async fn revision(&self, edge: &str) -> i64 {
        let resp = reqwest::Client::new()
            .get(self.url("/v1/keyset"))
            .bearer_auth(edge)
            .send()
            .await
            .expect("GET /v1/keyset");
        assert_eq!(resp.status(), 200, "key-set snapshot");
        resp.headers()["x-keygate-revision"]
            .to_str()
            .expect("text")
            .parse()
            .expect("a revision")
    }

    /// One key-set call as a proxy's filter makes it, with the report headers of an edge
    /// (`keygate_protocol::edge`) holding `revision`.
    pub async fn report_edge(&self, edge: &str, edge_id: &str, node: &str, revision: i64) {
        use keygate_protocol::edge::{
            CLUSTER_HEADER, ID_HEADER, KEYS_HEADER, NODE_HEADER, REVISION_HEADER, VERSION_HEADER,
            WORKERS_HEADER,
        };
        let resp = reqwest::Client::new()
            .get(self.url(&format!("/v1/keyset?since={revision}")))
            .bearer_auth(edge)
            .header(ID_HEADER, edge_id)
            .header(NODE_HEADER, node)
            .header(CLUSTER_HEADER, "ingress")
            .header(REVISION_HEADER, revision.to_string())
            .header(KEYS_HEADER, "2")
            .header(WORKERS_HEADER, "4")
            .header(VERSION_HEADER, "0.1.0")
            .send()
            .await
            .expect("GET /v1/keyset");
        assert!(
            [200, 304].contains(&resp.status().as_u16()),
            "key-set call: {}",
            resp.status()
        );
    }

    /// A workspace key of `workspace` with the key-management scopes; returns its secret.
    pub async fn workspace_key(&self, workspace: &str) -> String {
        let v = self
            .api_create(
                ADMIN_TOKEN,
                json!({"name": format!("{workspace} operator"), "workspace_id": workspace,
                       "owner_id": format!("{workspace}-ops"), "scopes": ["keys:read", "keys:write"]}),
            )
            .await;
        v["secret"].as_str().expect("secret").to_owned()
    }
}

fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` not found: the console's browser tests need Debian's headless Chromium \
             and its WebDriver: apt-get install -y chromium chromium-driver"
        )
    })
}

/// Headless chromium behind its own chromedriver, with a fantoccini client.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    _driver: Group,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session (1280×900).
    pub async fn start() -> Self {
        let chromium = require("chromium");
        let chromedriver = require("chromedriver");
        let port = keygate_testkit::free_port().expect("free port");
        let driver = Group::spawn(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver on {url} gave no session in 60 s: {e}"),
            }
        };
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// The element matching `css`, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let page = self.source().await;
                panic!("no `{css}` on {}: {e}\n{page}", self.path().await)
            }
        }
    }

    /// Whether an element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .is_empty()
    }

    /// The text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// Types `text` into the input matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("send_keys");
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks the element matching `css` (a submit button or a link) and waits up to 10 s for
    /// the next page to have loaded, so that later lookups never see the old one.
    pub async fn click_and_wait(&self, css: &str) {
        self.script("window.__keygateOldPage = true;").await;
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .script(
                    "return window.__keygateOldPage === undefined && \
                     document.readyState === 'complete';",
                )
                .await;
            if v == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page after clicking `{css}`"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The current URL's path.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.path().to_owned())
            .unwrap_or_default()
    }

    /// The page's source.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("source")
    }

    /// Runs a script in the page.
    pub async fn script(&self, js: &str) -> Value {
        self.client.execute(js, Vec::new()).await.expect("execute")
    }

    /// Signs in with `credential` and waits for the keys list.
    pub async fn sign_in(&self, console: &Console, credential: &str) {
        self.goto(&console.url("/sign-in")).await;
        self.fill("#credential", credential).await;
        self.click("#sign-in").await;
        self.find("#new-key").await;
        assert_eq!(self.path().await, "/keys");
    }

    /// Saves a screenshot of the page as `<name>.png` in [`screenshots_dir`].
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Sets the window's size (CSS pixels of the viewport are a little less).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("set_window_size");
    }

    /// Whether the page is wider than the window (a horizontal scrollbar): the document's
    /// scroll width against the viewport's width, and the widest element, for the message.
    pub async fn overflow(&self) -> Option<String> {
        let v = self
            .script(
                "const d = document.documentElement; \
                 let w = null; \
                 for (const e of document.querySelectorAll('body *')) { \
                   const r = e.getBoundingClientRect(); \
                   if (r.right > window.innerWidth + 0.5 && (!w || r.right > w.r)) \
                     w = {r: r.right, t: e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className}; } \
                 return [d.scrollWidth, window.innerWidth, w ? w.t + ' ends at ' + w.r : ''];",
            )
            .await;
        let scroll = v[0].as_i64().expect("scrollWidth");
        let inner = v[1].as_i64().expect("innerWidth");
        (scroll > inner).then(|| format!("scrollWidth {scroll} > innerWidth {inner}: {}", v[2]))
    }

    /// Ends the WebDriver session (chromium quits); the drop kills whatever is left.
    pub async fn close(self) {
        let Self {
            client,
            _driver,
            _profile,
        } = self;
        let _ = client.close().await;
    }
}

/// Where screenshots go: `docs/screenshots/` at the repository's root when
/// `KEYGATE_UPDATE_SCREENSHOTS=1` (refreshing the committed ones, deliberately), else
/// `KEYGATE_SCREENSHOTS_DIR`, else `console-screenshots/` in the build's target directory, so
/// an ordinary run never rewrites the committed images.
pub fn screenshots_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if std::env::var("KEYGATE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        return root.join("docs").join("screenshots");
    }
    if let Some(dir) = std::env::var_os("KEYGATE_SCREENSHOTS_DIR") {
        return PathBuf::from(dir);
    }
    // Tests run from target/<profile>/deps/: the target directory is two levels up.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| root.join("target"))
        .join("console-screenshots")
}
