//! A real browser for tests: Debian's headless `chromium` behind its own `chromedriver`, driven
//! over WebDriver by fantoccini ([`Browser`]; cargo feature `browser`), with screenshots
//! ([`screenshots_dir`]: the build's target directory, or `docs/screenshots/` with
//! `KEYGATE_UPDATE_SCREENSHOTS=1`). chromedriver and every process that inherited its tag
//! (chromium and its helpers, also those that left the process group) are killed on drop, so a
//! failing test leaves no browser running. A missing browser fails with the command that
//! installs it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// One browser test at a time: each starts a chromium, and the machine has two cores.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Marks every process a test starts (inherited by its children, chromium's helpers too) so
/// that [`Group`]'s drop can find them all, also those that left the process group or were
/// reparented (chromium's crash handler daemonizes).
const TAG_VAR: &str = "KEYGATE_BROWSER_TEST_TAG";

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

fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` not found: the browser tests need Debian's headless Chromium and its \
             WebDriver: apt-get install -y chromium chromium-driver"
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
        let port = crate::free_port().expect("free port");
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
