//! The plugin configuration embedded in `envoy/envoy.yaml`, byte for byte as Envoy passes it,
//! is what the filter expects: it configures with the edge key in the VM environment, and only then.

use std::path::Path;

use keygate_e2e::plugin;
use keygate_gateway::PluginSettings;
use keygate_host_harness::{Cluster, Harness, HarnessError};

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
fn envoy_yaml_configuration_is_refused_without_the_edge_key_in_the_environment() {
    let settings = envoy_settings();
    let result = Harness::builder_shared(plugin())
        .plugin_configuration(settings.configuration.clone())
        .cluster("keygate_control_plane", Cluster::http("http://127.0.0.1:9"))
        .build();
    assert!(
        matches!(result, Err(HarnessError::ConfigureFailed)),
        "expected a failed configure, got {:?}",
        result.err()
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
