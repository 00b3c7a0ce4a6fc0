//! nginx (`auth_request`) and Caddy (`forward_auth`) in front of an upstream, run from the
//! configuration files of `envoy/forward-auth/` (the operators' docs) and asking a real
//! `keygate serve` with forward-auth: a valid key passes with its identity and without its
//! secret; identity headers a client sends never reach the upstream; no key, an unknown key and
//! a revoked key are refused. (Traefik is not packaged by Debian: its sketch in
//! `envoy/README.md` is not run.)

use std::time::Duration;

use keygate_e2e::echo::{EchoUpstream, send};
use keygate_e2e::proxies::{ForwardAuthProxy, Proxy};
use keygate_e2e::stack::{ServeProcess, wait_for};
use keygate_e2e::{Api, IssuedKey, Reply};
use serde_json::json;

/// A control plane with forward-auth on the end-to-end routes, an echo upstream, keys, and the
/// proxy in front.
struct Setup {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    _echo: EchoUpstream,
    _cp: ServeProcess,
    api: Api,
    reader: IssuedKey,
    proxy: ForwardAuthProxy,
    _config: tempfile::TempDir,
}

impl Setup {
    fn start(proxy: Proxy) -> Self {
        let config = tempfile::tempdir().unwrap();
        let path = config.path().join("filter.json");
        let routes: serde_json::Value = serde_json::from_str(keygate_e2e::ROUTES).unwrap();
        let filter =
            json!({"routes": routes, "key_sources": [{"header": "x-api-key"}, {"bearer": true}]});
        std::fs::write(&path, filter.to_string()).unwrap();
        let cp = ServeProcess::start_sqlite(&[
            "--forward-auth-config".to_owned(),
            path.display().to_string(),
        ]);
        let api = Api::new(&cp.url());
        let edge_key = api
            .create_key(json!({"name": "proxy edge", "kind": "edge"}))
            .secret;
        let reader = api.create_key(json!({
            "name": "reader", "owner_id": "alice", "scopes": ["repo:read"], "resources": ["acme"]
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let echo = EchoUpstream::start(&rt);
        let proxy = ForwardAuthProxy::start(proxy, &cp.addr().to_string(), echo.addr(), &edge_key);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self {
            rt,
            http,
            _echo: echo,
            _cp: cp,
            api,
            reader,
            proxy,
            _config: config,
        }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("{}{path}", self.proxy.url);
        self.rt.block_on(send(&self.http, "GET", &url, headers))
    }

    /// What every proxy must do with the contract.
    fn enforces_the_contract(&self, json_denials: bool) {
        let logs = || self.proxy.logs();
        // A valid key passes with its identity, without its secret, and a client's own identity
        // headers are replaced.
        let r = self.get(
            "/repos/acme/x",
            &[
                ("x-api-key", &self.reader.secret),
                ("x-keygate-owner", "mallory"),
            ],
        );
        assert_eq!(r.status, 200, "{} {}\n{}", r.status, r.text, logs());
        assert_eq!(
            r.upstream_header("x-keygate-key-id"),
            Some(self.reader.id.as_str())
        );
        assert_eq!(r.upstream_header("x-keygate-owner"), Some("alice"));
        assert_eq!(r.upstream_header("x-keygate-scopes"), Some("repo:read"));
        assert_eq!(
            r.upstream_header("x-api-key"),
            None,
            "the key stays at the proxy"
        );
        assert_eq!(r.upstream_header("x-keygate-edge-key"), None);
        let bearer = format!("Bearer {}", self.reader.secret);
        let r = self.get("/repos/acme/x", &[("authorization", &bearer)]);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.upstream_header("authorization"), None);

        // An anonymous route passes without identity: a client's own is dropped.
        let r = self.get(
            "/health",
            &[
                ("x-keygate-key-id", "key_forged"),
                ("x-keygate-owner", "mallory"),
            ],
        );
        assert_eq!(r.status, 200, "{}\n{}", r.text, logs());
        assert_eq!(r.upstream_header("x-keygate-key-id"), None, "{:?}", r.body);
        assert_eq!(r.upstream_header("x-keygate-owner"), None);

        // Refusals: the filter's status, and (where the proxy passes it on) its JSON code.
        let unknown = keygate_protocol::key::generate("kg_live").unwrap();
        for (headers, status, code) in [
            (vec![], 401, "missing_key"),
            (
                vec![("x-api-key", unknown.expose_secret())],
                401,
                "unknown_key",
            ),
            (
                vec![("x-api-key", "kg_live_not_a_key")],
                401,
                "malformed_key",
            ),
            (
                vec![("x-api-key", self.reader.secret.as_str())],
                403,
                "resource_not_allowed",
            ),
        ] {
            let path = if code == "resource_not_allowed" {
                "/repos/other/x"
            } else {
                "/repos/acme/x"
            };
            let r = self.get(path, &headers);
            assert_eq!(r.status, status, "{code}: {}", r.text);
            if json_denials {
                assert_eq!(r.code(), code, "{}", r.text);
            }
            assert!(
                !r.text.contains("\"path\""),
                "the upstream was not reached: {}",
                r.text
            );
        }

        // A revocation is refused within the forward-auth mirror's catch-up.
        self.api.key_action(&self.reader.id, "revoke");
        wait_for("the revocation", Duration::from_secs(5), || {
            let r = self.get("/repos/acme/x", &[("x-api-key", &self.reader.secret)]);
            if r.status == 401 {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.text))
            }
        });
    }
}

#[test]
fn nginx_auth_request_from_the_docs_config_enforces_keys_through_forward_auth() {
    let setup = Setup::start(Proxy::Nginx);
    // nginx answers a refusal with its own error page: the status is the contract.
    setup.enforces_the_contract(false);
}

#[test]
fn caddy_forward_auth_from_the_docs_config_enforces_keys_through_forward_auth() {
    let setup = Setup::start(Proxy::Caddy);
    // Caddy passes forward-auth's answer on: Keygate's JSON reaches the client.
    setup.enforces_the_contract(true);
}
