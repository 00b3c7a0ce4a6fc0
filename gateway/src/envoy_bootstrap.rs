//! Runnable Envoy bootstraps made from `envoy/envoy.yaml`: the listener, admin and cluster
//! addresses, the filter module's path and the plugin configuration's `authority` substituted,
//! chosen plugin settings merged over the configuration, everything else exactly as deployed.
//!
//! Pure (text and values in, a value out): the quickstart (`keygate-quickstart`) and the
//! end-to-end tests (`keygate_e2e::envoy`) both build their bootstraps here, so what the tests
//! run is what the quickstart runs. The edge key is never written into a bootstrap: Envoy's
//! process environment carries it ([`EDGE_KEY_ENV`], listed in `host_env_keys`).

use serde_json::{Value, json};

use crate::GatewayError;

/// `envoy/envoy.yaml`, as built into this crate.
pub const ENVOY_YAML: &str = include_str!("../../envoy/envoy.yaml");

/// The listener of `envoy/envoy.yaml` that runs the filter.
pub const LISTENER: &str = "ingress";

/// The name of the Keygate HTTP filter in `envoy/envoy.yaml`.
pub const FILTER: &str = "keygate";

/// The cluster the filter syncs from (the plugin configuration's `cluster`).
pub const CONTROL_PLANE_CLUSTER: &str = "keygate_control_plane";

/// The cluster the router sends allowed requests to.
pub const UPSTREAM_CLUSTER: &str = "upstream";

/// The process environment variable `envoy/envoy.yaml` passes into the VM with the edge key.
pub const EDGE_KEY_ENV: &str = "KEYGATE_EDGE_KEY";

/// Where things are, each as `host:port` (`[v6]:port` for IPv6; port 0 lets Envoy pick one for
/// the listener and the admin interface).
#[derive(Debug, Clone, Copy)]
pub struct Addresses<'a> {
    /// The `ingress` listener.
    pub listener: &'a str,
    /// The admin interface.
    pub admin: &'a str,
    /// The control plane: the `keygate_control_plane` cluster's endpoint and the plugin
    /// configuration's `authority`.
    pub control_plane: &'a str,
    /// The `upstream` cluster's endpoint.
    pub upstream: &'a str,
}

/// An Envoy bootstrap (YAML or JSON text) as a JSON value.
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when the text is not YAML.
pub fn parse(yaml: &str) -> Result<Value, GatewayError> {
    serde_norway::from_str(yaml).map_err(|e| GatewayError::EnvoyConfig(format!("not YAML: {e}")))
}

/// The Keygate filter's Wasm `config` (the `typed_config.config` of the HTTP filter named
/// [`FILTER`] on the first listener's first filter chain).
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when the bootstrap has no such filter.
pub fn wasm_config_mut(bootstrap: &mut Value) -> Result<&mut Value, GatewayError> {
    bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_array_mut()
        .ok_or_else(|| config_error("no http_filters on the first listener"))?
        .iter_mut()
        .find(|f| f["name"] == FILTER)
        .map(|f| &mut f["typed_config"]["config"])
        .ok_or_else(|| config_error(&format!("no `{FILTER}` HTTP filter")))
}

/// The plugin configuration (the JSON text in `configuration.value`) of a bootstrap, parsed.
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when there is no Keygate filter or its configuration is not a
/// JSON string.
pub fn plugin_configuration(bootstrap: &Value) -> Result<Value, GatewayError> {
    let mut b = bootstrap.clone();
    let text = wasm_config_mut(&mut b)?["configuration"]["value"]
        .as_str()
        .ok_or_else(|| config_error("configuration.value is not a string"))?
        .to_owned();
    serde_json::from_str(&text)
        .map_err(|e| config_error(&format!("the plugin configuration is not JSON: {e}")))
}

/// A `socket_address` for `addr` (`host:port`).
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when `addr` has no numeric port.
pub fn socket_address(addr: &str) -> Result<Value, GatewayError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| config_error(&format!("address {addr} has no port")))?;
    let port: u16 = port
        .parse()
        .map_err(|e| config_error(&format!("address {addr}: {e}")))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(json!({"address": host, "port_value": port}))
}

/// Points the (first) endpoint of `cluster` at `addr` (`host:port`).
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when there is no such cluster or `addr` is malformed.
pub fn set_cluster_endpoint(
    bootstrap: &mut Value,
    cluster: &str,
    addr: &str,
) -> Result<(), GatewayError> {
    let address = socket_address(addr)?;
    let c = bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .ok_or_else(|| config_error("no clusters"))?
        .iter_mut()
        .find(|c| c["name"] == cluster)
        .ok_or_else(|| config_error(&format!("no cluster {cluster}")))?;
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] =
        address;
    Ok(())
}

/// `base` (a parsed bootstrap such as `envoy/envoy.yaml`) made runnable here: the `ingress`
/// listener and the admin interface at `addresses`, the control-plane and upstream clusters'
/// endpoints, the filter module read from `wasm_path`, and the plugin configuration with
/// `authority` set to the control plane and `overrides` (a JSON object) merged over it (`null`
/// removes a member).
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when `base` lacks a part that is substituted or an address is
/// malformed.
pub fn runnable(
    mut base: Value,
    addresses: &Addresses<'_>,
    wasm_path: &str,
    overrides: &Value,
) -> Result<Value, GatewayError> {
    let listener = base["static_resources"]["listeners"]
        .as_array_mut()
        .ok_or_else(|| config_error("no listeners"))?
        .iter_mut()
        .find(|l| l["name"] == LISTENER)
        .ok_or_else(|| config_error(&format!("no listener {LISTENER}")))?;
    listener["address"]["socket_address"] = socket_address(addresses.listener)?;
    base["admin"]["address"]["socket_address"] = socket_address(addresses.admin)?;
    set_cluster_endpoint(&mut base, CONTROL_PLANE_CLUSTER, addresses.control_plane)?;
    set_cluster_endpoint(&mut base, UPSTREAM_CLUSTER, addresses.upstream)?;
    let mut configuration = plugin_configuration(&base)?;
    configuration["authority"] = json!(addresses.control_plane);
    if let (Some(config), Some(overrides)) = (configuration.as_object_mut(), overrides.as_object())
    {
        for (k, v) in overrides {
            if v.is_null() {
                config.remove(k);
            } else {
                config.insert(k.clone(), v.clone());
            }
        }
    }
    let config = wasm_config_mut(&mut base)?;
    config["vm_config"]["code"]["local"]["filename"] = json!(wasm_path);
    config["configuration"]["value"] = json!(configuration.to_string());
    Ok(base)
}

/// [`runnable`] on `envoy/envoy.yaml` ([`ENVOY_YAML`]).
///
/// # Errors
/// As [`runnable`].
pub fn from_envoy_yaml(
    addresses: &Addresses<'_>,
    wasm_path: &str,
    overrides: &Value,
) -> Result<Value, GatewayError> {
    runnable(parse(ENVOY_YAML)?, addresses, wasm_path, overrides)
}

/// A response header Envoy's route configuration fills from the filter's state
/// (`response_headers_to_add` with the value `%FILTER_STATE(wasm.<property>:PLAIN)%`): how the
/// filter's `proxy_set_property` values reach the client (`RateLimit-Policy` and `RateLimit` on
/// allowed requests, docs/rate-limits.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterStateHeader {
    /// The response header's name.
    pub header: String,
    /// The property the filter sets (without Envoy's `wasm.` prefix).
    pub property: String,
    /// Whether an empty value is still added (`keep_empty_value`; a property the filter did not
    /// set reads as empty).
    pub keep_empty_value: bool,
}

/// The [`FilterStateHeader`]s of the `ingress` listener's virtual hosts, in order. Entries with
/// other values (fixed text, other formatters) are Envoy's alone: the gateway does not add them.
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when the bootstrap has no `ingress` listener.
pub fn filter_state_headers(bootstrap: &Value) -> Result<Vec<FilterStateHeader>, GatewayError> {
    let listener = bootstrap["static_resources"]["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == LISTENER))
        .ok_or_else(|| config_error(&format!("no listener {LISTENER}")))?;
    let mut out = Vec::new();
    let chains = listener["filter_chains"].as_array().into_iter().flatten();
    let filters = chains.flat_map(|c| c["filters"].as_array().into_iter().flatten());
    let hosts = filters.flat_map(|f| {
        f["typed_config"]["route_config"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
    });
    for add in hosts.flat_map(|h| {
        h["response_headers_to_add"]
            .as_array()
            .into_iter()
            .flatten()
    }) {
        let (Some(header), Some(value)) = (
            add["header"]["key"].as_str(),
            add["header"]["value"].as_str(),
        ) else {
            continue;
        };
        let property = value
            .strip_prefix("%FILTER_STATE(wasm.")
            .and_then(|v| v.strip_suffix(":PLAIN)%"));
        if let Some(property) = property {
            out.push(FilterStateHeader {
                header: header.to_ascii_lowercase(),
                property: property.to_owned(),
                keep_empty_value: add["keep_empty_value"].as_bool().unwrap_or(true),
            });
        }
    }
    Ok(out)
}

/// The request headers a bootstrap gives an inline slot in Envoy's header map (its
/// `inline_headers` of type `REQUEST_HEADER`), lowercase: Envoy joins the repeated values of
/// such a header into one, comma-separated, before any filter sees them.
pub fn inline_request_headers(bootstrap: &Value) -> Vec<String> {
    bootstrap["inline_headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["inline_header_type"] == "REQUEST_HEADER")
        .filter_map(|h| h["inline_header_name"].as_str())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// [`inline_request_headers`] of `envoy/envoy.yaml` ([`ENVOY_YAML`]), as deployed.
///
/// # Errors
/// [`GatewayError::EnvoyConfig`] when the built-in `envoy.yaml` is not YAML.
pub fn shipped_inline_request_headers() -> Result<Vec<String>, GatewayError> {
    Ok(inline_request_headers(&parse(ENVOY_YAML)?))
}

/// [`filter_state_headers`] of `envoy/envoy.yaml` ([`ENVOY_YAML`]), as deployed.
///
/// # Errors
/// As [`filter_state_headers`].
pub fn shipped_filter_state_headers() -> Result<Vec<FilterStateHeader>, GatewayError> {
    filter_state_headers(&parse(ENVOY_YAML)?)
}

fn config_error(what: &str) -> GatewayError {
    GatewayError::EnvoyConfig(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Addresses<'static> = Addresses {
        listener: "127.0.0.1:0",
        admin: "127.0.0.1:0",
        control_plane: "127.0.0.1:8080",
        upstream: "[::1]:8081",
    };

    #[test]
    fn substitutes_addresses_module_and_authority_and_keeps_the_rest() {
        let base = parse(ENVOY_YAML).expect("envoy.yaml parses");
        let b = runnable(
            base.clone(),
            &HERE,
            "/tmp/k.wasm",
            &json!({"sync_interval_ms": 500, "max_staleness_s": null}),
        )
        .expect("runnable");
        let l = &b["static_resources"]["listeners"][0];
        assert_eq!(l["name"], LISTENER);
        assert_eq!(
            l["address"]["socket_address"],
            json!({"address": "127.0.0.1", "port_value": 0})
        );
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 0);
        let endpoint = |name: &str| {
            b["static_resources"]["clusters"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .map(|c| {
                    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                        ["socket_address"]
                        .clone()
                })
                .expect("cluster")
        };
        assert_eq!(
            endpoint(CONTROL_PLANE_CLUSTER),
            json!({"address": "127.0.0.1", "port_value": 8080})
        );
        assert_eq!(
            endpoint(UPSTREAM_CLUSTER),
            json!({"address": "::1", "port_value": 8081})
        );
        let mut b2 = b.clone();
        let wasm = wasm_config_mut(&mut b2).expect("filter");
        assert_eq!(
            wasm["vm_config"]["code"]["local"]["filename"],
            "/tmp/k.wasm"
        );
        assert_eq!(
            wasm["vm_config"]["environment_variables"]["host_env_keys"],
            json!([EDGE_KEY_ENV])
        );
        let deployed = plugin_configuration(&base).expect("configuration");
        let c = plugin_configuration(&b).expect("configuration");
        assert_eq!(c["authority"], "127.0.0.1:8080");
        assert_eq!(c["sync_interval_ms"], 500);
        assert!(c.get("max_staleness_s").is_none());
        assert_eq!(c["cluster"], CONTROL_PLANE_CLUSTER);
        assert_eq!(c["routes"], deployed["routes"]);
        assert!(c.get("edge_key").is_none(), "no secret in a bootstrap");
        // The rest (filter order, failure policy, HTTP connection manager) is as deployed.
        assert_eq!(
            l["filter_chains"][0]["filters"][0]["typed_config"]["normalize_path"],
            true
        );
        assert_eq!(
            wasm_config_mut(&mut b2).expect("filter")["failure_policy"],
            "FAIL_RELOAD"
        );
    }

    #[test]
    fn reads_the_request_headers_envoy_yaml_gives_an_inline_slot() {
        assert_eq!(shipped_inline_request_headers().unwrap(), ["x-api-key"]);
        let bootstrap = json!({"inline_headers": [
            {"inline_header_name": "X-Key", "inline_header_type": "REQUEST_HEADER"},
            {"inline_header_name": "x-out", "inline_header_type": "RESPONSE_HEADER"}
        ]});
        assert_eq!(inline_request_headers(&bootstrap), ["x-key"]);
        assert!(inline_request_headers(&json!({})).is_empty());
    }

    #[test]
    fn reads_the_filter_state_headers_envoy_yaml_adds_to_responses() {
        assert_eq!(
            shipped_filter_state_headers().unwrap(),
            vec![
                FilterStateHeader {
                    header: "ratelimit-policy".into(),
                    property: "keygate_ratelimit_policy".into(),
                    keep_empty_value: false,
                },
                FilterStateHeader {
                    header: "ratelimit".into(),
                    property: "keygate_ratelimit".into(),
                    keep_empty_value: false,
                },
            ]
        );
        // Fixed values and other formatters are not the filter's; an absent `keep_empty_value`
        // is Envoy's default (true).
        let bootstrap = parse(
            r#"
static_resources:
  listeners:
  - name: ingress
    filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:
            - response_headers_to_add:
              - header: { key: X-Fixed, value: "1" }
              - header: { key: X-Start, value: "%START_TIME%" }
              - header: { key: X-Mine, value: "%FILTER_STATE(wasm.mine:PLAIN)%" }
"#,
        )
        .unwrap();
        assert_eq!(
            filter_state_headers(&bootstrap).unwrap(),
            vec![FilterStateHeader {
                header: "x-mine".into(),
                property: "mine".into(),
                keep_empty_value: true,
            }]
        );
        assert!(filter_state_headers(&json!({})).is_err());
    }

    #[test]
    fn says_what_is_missing() {
        let err = runnable(json!({"static_resources": {}}), &HERE, "x", &json!({}))
            .expect_err("no listeners");
        assert!(err.to_string().contains("no listeners"), "{err}");
        let err = socket_address("localhost").expect_err("no port");
        assert!(err.to_string().contains("no port"), "{err}");
        let mut b = parse(ENVOY_YAML).expect("parses");
        let err = set_cluster_endpoint(&mut b, "nope", "1.2.3.4:5").expect_err("no cluster");
        assert!(err.to_string().contains("no cluster nope"), "{err}");
    }
}
