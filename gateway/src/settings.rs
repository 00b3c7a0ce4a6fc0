//! What the filter is given: plugin configuration, VM id, root id and environment — from a
//! plain file or from the Wasm filter of an Envoy bootstrap (`envoy.yaml`).

use std::path::Path;

use serde_norway::Value;

use crate::error::GatewayError;

const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The settings Envoy would hand the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginSettings {
    /// Bytes passed to `proxy_on_configure`.
    pub configuration: Vec<u8>,
    /// `vm_config.vm_id`.
    pub vm_id: String,
    /// `root_id`.
    pub root_id: String,
    /// `vm_config.environment_variables.key_values`.
    pub key_values: Vec<(String, String)>,
    /// `vm_config.environment_variables.host_env_keys`: copied from this process's environment.
    pub host_env_keys: Vec<String>,
}

impl PluginSettings {
    /// Settings with this configuration and no VM/root id or environment.
    pub fn from_configuration(configuration: impl Into<Vec<u8>>) -> Self {
        Self {
            configuration: configuration.into(),
            ..Self::default()
        }
    }

    /// Reads a configuration file (its bytes, as Envoy's `StringValue`).
    pub fn from_file(path: &Path) -> Result<Self, GatewayError> {
        let bytes = std::fs::read(path).map_err(|source| GatewayError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_configuration(bytes))
    }

    /// Reads an Envoy bootstrap file; see [`PluginSettings::from_envoy_yaml`].
    pub fn from_envoy_file(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|source| GatewayError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_envoy_yaml(&text)
    }

    /// Extracts the first HTTP Wasm filter (`envoy.extensions.filters.http.wasm.v3.Wasm`) of an
    /// Envoy bootstrap: `config.configuration.value` exactly as Envoy passes it, `root_id`,
    /// `vm_config.vm_id` and `vm_config.environment_variables`.
    pub fn from_envoy_yaml(text: &str) -> Result<Self, GatewayError> {
        let doc: Value = serde_norway::from_str(text)
            .map_err(|e| GatewayError::EnvoyConfig(format!("not YAML: {e}")))?;
        let config = find_wasm_config(&doc).ok_or_else(|| {
            GatewayError::EnvoyConfig(format!(
                "no HTTP filter with typed_config @type {WASM_FILTER_TYPE}"
            ))
        })?;
        let configuration = match config.get("configuration") {
            None => Vec::new(),
            Some(c) => match c.get("value") {
                Some(Value::String(s)) => s.clone().into_bytes(),
                Some(_) => {
                    return Err(GatewayError::EnvoyConfig(
                        "config.configuration.value must be a string (google.protobuf.StringValue)"
                            .into(),
                    ));
                }
                None => Vec::new(),
            },
        };
        let text_at = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        let vm = config.get("vm_config");
        let env = vm.and_then(|v| v.get("environment_variables"));
        let host_env_keys = env
            .and_then(|e| e.get("host_env_keys"))
            .and_then(Value::as_sequence)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let key_values = env
            .and_then(|e| e.get("key_values"))
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            configuration,
            vm_id: text_at(vm.and_then(|v| v.get("vm_id"))),
            root_id: text_at(config.get("root_id")),
            key_values,
            host_env_keys,
        })
    }

    /// The environment the VM sees: `key_values` plus the `host_env_keys` present here.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env = self.key_values.clone();
        for key in &self.host_env_keys {
            if let Ok(value) = std::env::var(key) {
                env.push((key.clone(), value));
            }
        }
        env
    }
}

/// Depth-first search for a `typed_config` of the Wasm HTTP filter; returns its `config`.
fn find_wasm_config(value: &Value) -> Option<&Value> {
    match value {
        Value::Mapping(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(WASM_FILTER_TYPE) {
                return map.get("config");
            }
            map.values().find_map(find_wasm_config)
        }
        Value::Sequence(items) => items.iter().find_map(find_wasm_config),
        Value::Tagged(tagged) => find_wasm_config(&tagged.value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_wasm_filter_of_an_envoy_bootstrap() {
        let yaml = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          http_filters:
          - name: other
            typed_config: {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
          - name: keygate
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                root_id: kg
                vm_config:
                  vm_id: shared
                  environment_variables:
                    host_env_keys: ["A_KEY"]
                    key_values: {MODE: demo}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {"cluster": "cp"}
"#;
        let s = PluginSettings::from_envoy_yaml(yaml).expect("parses");
        assert_eq!(s.configuration, b"{\"cluster\": \"cp\"}\n");
        assert_eq!(s.root_id, "kg");
        assert_eq!(s.vm_id, "shared");
        assert_eq!(s.host_env_keys, vec!["A_KEY".to_owned()]);
        assert_eq!(s.key_values, vec![("MODE".to_owned(), "demo".to_owned())]);
    }

    #[test]
    fn refuses_a_bootstrap_without_a_wasm_filter() {
        let err = PluginSettings::from_envoy_yaml("static_resources: {listeners: []}")
            .expect_err("no filter");
        assert!(err.to_string().contains("no HTTP filter"), "{err}");
        let err = PluginSettings::from_envoy_yaml("a: [b").expect_err("bad yaml");
        assert!(err.to_string().contains("not YAML"), "{err}");
    }

    #[test]
    fn reads_the_repository_envoy_yaml() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy/envoy.yaml");
        let s = PluginSettings::from_envoy_file(&path)
            .expect("envoy/envoy.yaml has the Keygate filter");
        let json: serde_json::Value =
            serde_json::from_slice(&s.configuration).expect("configuration is JSON");
        assert!(
            json.get("cluster").and_then(|c| c.as_str()).is_some(),
            "{json}"
        );
    }
}
