//! The plugin configuration embedded in `envoy/envoy.yaml`, byte for byte as Envoy passes it,
//! is what the filter expects: it configures with the edge key in the VM environment, and only then,
//! and in the gateway it syncs from the real control plane and enforces keys.

use std::path::Path;
use std::time::{Duration, Instant};

use keygate_e2e::{ControlPlane, plugin};
use keygate_gateway::{Gateway, GatewayConfig, PluginSettings};
use keygate_host_harness::{Cluster, Harness};

fn envoy_settings() -> PluginSettings {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy/envoy.yaml");
    PluginSettings::from_envoy_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn envoy_yaml_names_the_vm_and_passes_the_edge_key_by_environment() {
    let settings = envoy_settings();
    assert_eq!(settings.vm_id, "keygate");
    assert_eq!(settings.root_id, "keygate");
    assert_eq!(settings.host_env_keys, vec!["KEYGATE_EDGE_KEY".to_string()]);
    let config: serde_json::Value = serde_json::from_slice(&settings.configuration)
        .unwrap_or_else(|e| panic!("configuration is not JSON: {e}"));
    assert_eq!(config["cluster"], "keygate_control_plane");
    assert!(
        config.get("edge_key").is_none(),
        "no secret in envoy.yaml: {config}"
    );
}

#[test]
fn without_the_edge_key_in_the_environment_the_filter_configures_fails_closed_and_says_why() {
    // Accepted, so that `envoy --mode validate` (which has no secrets) and a start without the
    // variable do not fail on it; but the filter never calls the control plane, every keyed
    // request fails closed, and the log names the variable.
    let settings = envoy_settings();
    let mut h = Harness::builder_shared(plugin())
        .plugin_configuration(settings.configuration.clone())
        .cluster("keygate_control_plane", Cluster::http("http://127.0.0.1:9"))
        .build()
        .unwrap_or_else(|e| panic!("configure: {e}"));
    h.advance(Duration::from_secs(3));
    assert!(h.callouts().is_empty(), "{:?}", h.callouts());
    let key = keygate_protocol::key::generate("kg_live").unwrap_or_else(|e| panic!("{e}"));
    let o = h
        .run_request(
            keygate_host_harness::Request::get("/x").header("x-api-key", key.expose_secret()),
        )
        .unwrap_or_else(|e| panic!("request: {e}"));
    let lr = o.local_response.unwrap_or_else(|| panic!("no local reply"));
    assert_eq!(lr.status, 503);
    let errors = h.logs_at(keygate_host_harness::LogLevel::Error);
    assert!(
        errors
            .iter()
            .any(|m| m.contains("\"KEYGATE_EDGE_KEY\"") && m.contains("host_env_keys")),
        "{errors:?}"
    );
}

#[test]
fn envoy_yaml_configuration_is_accepted_with_the_edge_key_in_the_environment() {
    let settings = envoy_settings();
    let result = Harness::builder_shared(plugin())
        .workers(2)
        .vm_id(settings.vm_id.clone())
        .plugin_configuration(settings.configuration.clone())
        .env_var(
            "KEYGATE_EDGE_KEY",
            "kg_edge_0000000000000000000000000000000000000000",
        )
        .cluster("keygate_control_plane", Cluster::http("http://127.0.0.1:9"))
        .build();
    assert!(result.is_ok(), "refused: {:?}", result.err());
}

/// The exact configuration of `envoy.yaml` (edge key by VM environment, long-poll 20 s), in the
/// gateway on real time against the real control plane over HTTP: it syncs and enforces keys,
/// and a revocation reaches it through the long-poll.
#[test]
fn envoy_yaml_configuration_syncs_from_the_real_control_plane_and_enforces_keys() {
    let mut settings = envoy_settings();
    let cp = ControlPlane::start_sqlite();
    let user = cp
        .api
        .create_key(serde_json::json!({"name": "envoy user", "owner_id": "alice"}));
    // `host_env_keys` would copy the variable from this process's environment, as Envoy does;
    // tests run in parallel, so the same value goes in as a `key_values` entry instead.
    settings.host_env_keys.clear();
    settings
        .key_values
        .push(("KEYGATE_EDGE_KEY".into(), cp.edge_key.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let echo = format!(
            "http://{}",
            echo_listener
                .local_addr()
                .unwrap_or_else(|e| panic!("addr: {e}"))
        );
        tokio::spawn(keygate_gateway::serve_echo(
            echo_listener,
            std::future::pending::<()>(),
        ));
        let gateway = Gateway::start(GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            upstream: echo,
            plugin: plugin(),
            settings,
            clusters: vec![("keygate_control_plane".into(), cp.base.clone())],
            workers: 2,
            filter_state_headers: keygate_gateway::envoy_bootstrap::shipped_filter_state_headers()
                .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}")),
            inline_request_headers:
                keygate_gateway::envoy_bootstrap::shipped_inline_request_headers()
                    .unwrap_or_else(|e| panic!("envoy/envoy.yaml: {e}")),
        })
        .await
        .unwrap_or_else(|e| panic!("gateway: {e}"));
        let url = format!("http://{}/orders", gateway.local_addr());
        let http = reqwest::Client::new();
        let get = |key: Option<String>| {
            let mut req = http.get(&url);
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            async move {
                let resp = req.send().await.unwrap_or_else(|e| panic!("GET: {e}"));
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                (status, body)
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = loop {
            let (status, body) = get(Some(user.secret.clone())).await;
            if status == 200 {
                break body;
            }
            assert!(Instant::now() < deadline, "never allowed: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(body["headers"]["x-keygate-key-id"], user.id.as_str());
        assert_eq!(body["headers"]["x-keygate-owner"], "alice");
        assert!(body["headers"].get("x-api-key").is_none(), "{body}");
        let (status, body) = get(None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &"missing_key".into())
        );

        // Revocation travels over the 20 s long-poll: it lands well before the poll times out.
        let revoked = Instant::now();
        tokio::task::block_in_place(|| cp.api.key_action(&user.id, "revoke"));
        loop {
            let (status, body) = get(Some(user.secret.clone())).await;
            if status == 401 {
                assert_eq!(body["error"]["code"], "unknown_key");
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(10),
                "still {status} after revocation"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gateway.shutdown().await;
    });
}
