//! A running Envoy takes a new Keygate configuration (a listener update from its LDS file, as
//! configuration management pushes one) without a failed request: requests sent all through the
//! change are answered by the old routes, then by the new ones, and never `503` for want of a
//! key set. Both shells: the Wasm filter (`envoy/envoy.yaml`) and the dynamic module
//! (`envoy/envoy-module.yaml`, whose new configuration joins the process's running sync).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keygate_e2e::echo::{EchoUpstream, send};
use keygate_e2e::envoy::{EDGE_KEY_ENV, LISTENER, bootstrap};
use keygate_e2e::lds::LdsEnvoy;
use keygate_e2e::native;
use keygate_e2e::stack::{ServeProcess, wait_for};
use keygate_e2e::{Api, IssuedKey};
use keygate_testkit::envoy::EnvoyOptions;
use serde_json::{Value, json};

/// Plugin settings whose one route asks for `scope`.
fn routes(scope: &str) -> Value {
    json!({"long_poll_wait_s": 5, "routes": [{"path_prefix": "/", "required_scopes": [scope]}]})
}

/// The scenario, on the bootstrap `make(upstream, overrides)` makes.
struct Reload {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    echo: EchoUpstream,
    envoy: LdsEnvoy,
    reader: IssuedKey,
    writer: IssuedKey,
}

impl Reload {
    fn start(api: &Api, options: &EnvoyOptions, make: &dyn Fn(&str, &Value) -> Value) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let echo = EchoUpstream::start(&rt);
        let reader = api.create_key(json!({"name": "reader", "scopes": ["repo:read"]}));
        let writer = api.create_key(json!({"name": "writer", "scopes": ["repo:write"]}));
        let envoy = LdsEnvoy::start(make(echo.addr(), &routes("repo:read")), options);
        // A connection per request: each one meets the listener as it is at that moment.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Self {
            rt,
            http,
            echo,
            envoy,
            reader,
            writer,
        }
    }

    fn status(&self, key: &str) -> u16 {
        let url = format!("{}/repos/acme/x", self.envoy.url(LISTENER));
        self.rt
            .block_on(send(&self.http, "GET", &url, &[("x-api-key", key)]))
            .status
    }

    /// Reader allowed, writer refused; then the route changes to `repo:write` while the reader
    /// keeps sending; then writer allowed, reader refused. Every answer on the way is one of the
    /// two routes' (200 or 403, in that order), none a failure.
    fn changes_routes_without_a_failed_request(&mut self, make: &dyn Fn(&str, &Value) -> Value) {
        wait_for("the first sync", Duration::from_secs(15), || {
            match (
                self.status(&self.reader.secret),
                self.status(&self.writer.secret),
            ) {
                (200, 403) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });

        let stop = Arc::new(AtomicBool::new(false));
        let sending = {
            let stop = Arc::clone(&stop);
            let http = self.http.clone();
            let url = format!("{}/repos/acme/x", self.envoy.url(LISTENER));
            let key = self.reader.secret.clone();
            self.rt.spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push(
                        send(&http, "GET", &url, &[("x-api-key", &key)])
                            .await
                            .status,
                    );
                }
                seen
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let mut v2 = make(self.echo.addr(), &routes("repo:write"))["static_resources"]["listeners"]
            [0]
        .clone();
        v2["name"] = json!(LISTENER);
        self.envoy.update_listener(v2);
        wait_for("the new routes", Duration::from_secs(5), || {
            match (
                self.status(&self.reader.secret),
                self.status(&self.writer.secret),
            ) {
                (403, 200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let seen = self.rt.block_on(sending).unwrap();

        let first_new = seen.iter().position(|s| *s == 403);
        assert!(
            seen.first() == Some(&200) && first_new.is_some(),
            "the old routes, then the new: {seen:?}"
        );
        let (before, after) = seen.split_at(first_new.unwrap_or(0));
        assert!(
            before.iter().all(|s| *s == 200) && after.iter().all(|s| *s == 403),
            "{} requests through the change, each answered by the old routes then the new, \
             none failed: {seen:?}",
            seen.len()
        );
        eprintln!(
            "{} requests through the change: {} by the old routes, {} by the new",
            seen.len(),
            before.len(),
            after.len()
        );
    }
}

impl Drop for Reload {
    fn drop(&mut self) {
        self.echo.stop();
    }
}

fn control_plane() -> (ServeProcess, Api, String) {
    let cp = ServeProcess::start_sqlite(&[]);
    let api = Api::new(&cp.url());
    let edge_key = api
        .create_key(json!({"name": "reload edge", "kind": "edge"}))
        .secret;
    (cp, api, edge_key)
}

#[test]
fn the_wasm_filter_takes_new_routes_from_a_listener_update_without_a_failed_request() {
    let (cp, api, edge_key) = control_plane();
    let control_plane = cp.addr().to_string();
    let make = |upstream: &str, overrides: &Value| bootstrap(&control_plane, upstream, overrides);
    let options = EnvoyOptions {
        concurrency: 2,
        env: vec![(EDGE_KEY_ENV.to_owned(), edge_key)],
        ..EnvoyOptions::default()
    };
    let mut reload = Reload::start(&api, &options, &make);
    reload.changes_routes_without_a_failed_request(&make);
}

#[test]
fn the_dynamic_module_takes_new_routes_from_a_listener_update_on_its_running_sync() {
    let (cp, api, edge_key) = control_plane();
    let url = cp.url();
    let make =
        |upstream: &str, overrides: &Value| native::module_bootstrap(&url, upstream, overrides);
    let mut options = native::options(2);
    options.env.push((EDGE_KEY_ENV.to_owned(), edge_key));
    let mut reload = Reload::start(&api, &options, &make);
    reload.changes_routes_without_a_failed_request(&make);
    // The new configuration names the same source: it joined the sync that was running.
    assert_eq!(
        reload
            .envoy
            .stat("dynamicmodulescustom.keygate.native.syncs"),
        1,
        "{:?}",
        reload.envoy.envoy.stats()
    );
}
