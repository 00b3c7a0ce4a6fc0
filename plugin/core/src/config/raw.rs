//! The JSON shape: what serde reads from the document, with the defaults of omitted fields.

use serde::Deserialize;

use super::FailureMode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) cluster: String,
    pub(super) authority: String,
    #[serde(default)]
    pub(super) edge_key: Option<String>,
    #[serde(default)]
    pub(super) edge_key_env: Option<String>,
    #[serde(default = "default_sync_interval_ms")]
    pub(super) sync_interval_ms: u64,
    #[serde(default)]
    pub(super) long_poll_wait_s: u32,
    #[serde(default)]
    pub(super) key_sources: Option<Vec<RawKeySource>>,
    #[serde(default)]
    pub(super) accepted_prefixes: Option<Vec<String>>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) identity_headers: Option<RawIdentityHeaders>,
    #[serde(default = "default_true")]
    pub(super) hide_credentials: bool,
    #[serde(default)]
    pub(super) failure_mode: FailureMode,
    #[serde(default = "default_max_staleness_s")]
    pub(super) max_staleness_s: u64,
    #[serde(default = "default_usage_report_interval_ms")]
    pub(super) usage_report_interval_ms: u64,
    #[serde(default)]
    pub(super) usage_cluster: Option<String>,
    #[serde(default = "default_request_timeout_ms")]
    pub(super) request_timeout_ms: u64,
    #[serde(default)]
    pub(super) rate_limit_headers: bool,
    #[serde(default = "default_fleet_size")]
    pub(super) rate_limit_fleet_size: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum RawKeySource {
    Header(String),
    Bearer(bool),
    Query(String),
    Cookie(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) path_prefix: String,
    #[serde(default)]
    pub(super) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) required_scopes: Vec<String>,
    #[serde(default)]
    pub(super) resource_from_path_segment: Option<usize>,
    #[serde(default)]
    pub(super) anonymous: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityHeaders {
    #[serde(default)]
    pub(super) key_id: Option<String>,
    #[serde(default)]
    pub(super) owner: Option<String>,
    #[serde(default)]
    pub(super) scopes: Option<String>,
}

fn default_fleet_size() -> u32 {
    1
}
fn default_sync_interval_ms() -> u64 {
    500
}
fn default_true() -> bool {
    true
}
fn default_max_staleness_s() -> u64 {
    300
}
fn default_usage_report_interval_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    5000
}
