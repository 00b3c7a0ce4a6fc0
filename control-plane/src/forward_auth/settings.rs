//! How an operator turns forward-auth on: `--forward-auth-config` names the filter's plugin
//! configuration (the same JSON the Wasm filter gets in Envoy's `configuration`), and
//! `--forward-auth-open` drops the proxy credential on a private network. Read and validated
//! once at start-up; anything wrong stops `keygate serve` with a message naming the field.
//!
//! The decision members are honoured exactly as the filter honours them: `key_sources`,
//! `accepted_prefixes`, `routes`, `identity_headers`, `hide_credentials`, and `failure_mode` with
//! `max_staleness_s` (here: how long the database may go without confirming the in-memory key
//! set before the failure mode applies). The members about the filter's own link to the control
//! plane ([`FILTER_ONLY`]: cluster, authority, edge key, sync, long-poll, usage reporting, call
//! timeout) mean nothing here: they may be left out, and when present they are validated as the
//! filter validates them and then ignored; the environment is never read for `edge_key_env`.
//! One configuration is refused although the filter takes it: a `query` key source with
//! `hide_credentials` (the default), because neither Envoy's `ext_authz` HTTP service nor the
//! forward-auth proxies let the authorization answer rewrite the upstream path, so the key would
//! reach the upstream.

use std::path::PathBuf;

use keygate_filter_core::config::{Config as FilterConfig, KeySource};
use serde_json::{Map, Value};

/// The members of the filter's configuration that concern only the filter's link to the
/// control plane; forward-auth ignores them.
pub const FILTER_ONLY: [&str; 9] = [
    "cluster",
    "authority",
    "edge_key",
    "edge_key_env",
    "sync_interval_ms",
    "long_poll_wait_s",
    "usage_report_interval_ms",
    "usage_cluster",
    "request_timeout_ms",
];

/// The `keygate serve` flags of the forward-auth endpoint.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ForwardAuthArgs {
    /// The filter's plugin configuration (a JSON file, the same the Wasm filter gets) that
    /// `/v1/forward-auth` decides with; without it the endpoint answers 404
    /// `FORWARD_AUTH_DISABLED`.
    #[arg(long = "forward-auth-config", env = "KEYGATE_FORWARD_AUTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Answer forward-auth calls without a proxy credential (by default the proxy must present
    /// an `edge` key in `x-keygate-edge-key`). Only where nothing but the proxy can reach the
    /// control plane: the endpoint tells anyone who asks whether a key is valid, and trusts
    /// the `X-Forwarded-*` headers it is sent.
    #[arg(long = "forward-auth-open", env = "KEYGATE_FORWARD_AUTH_OPEN")]
    pub open: bool,
}

/// A forward-auth setting that stops the start.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file cannot be read.
    #[error("--forward-auth-config {path}: cannot read it: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The configuration is not valid (for the filter, or for forward-auth).
    #[error("--forward-auth-config {path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The JSON path of the value at fault (`.` for the document).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// `--forward-auth-open` without a configuration.
    #[error(
        "--forward-auth-open needs --forward-auth-config (the endpoint is off without a configuration)"
    )]
    OpenWithoutConfig,
}

/// The validated settings of an enabled endpoint.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The filter's configuration, as the filter parses it.
    pub filter: FilterConfig,
    /// No proxy credential required.
    pub open: bool,
    /// Where the configuration came from.
    pub path: PathBuf,
    /// The [`FILTER_ONLY`] members the file sets (ignored), for the start-up log.
    pub ignored: Vec<&'static str>,
}

impl Settings {
    /// The settings `args` ask for: `None` when forward-auth is off.
    ///
    /// # Errors
    /// [`SettingsError`] naming the flag, the file and the field at fault.
    pub fn load(args: &ForwardAuthArgs) -> Result<Option<Self>, SettingsError> {
        let Some(path) = &args.config else {
            return if args.open {
                Err(SettingsError::OpenWithoutConfig)
            } else {
                Ok(None)
            };
        };
        let bytes = std::fs::read(path).map_err(|e| SettingsError::Read {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let (filter, ignored) =
            parse(&bytes).map_err(|(field, message)| SettingsError::Invalid {
                path: path.clone(),
                field,
                message,
            })?;
        Ok(Some(Self {
            filter,
            open: args.open,
            path: path.clone(),
            ignored,
        }))
    }
}

/// Parses the filter's configuration for forward-auth: the members the filter requires but
/// forward-auth ignores are filled in when absent, the filter's parser validates the whole, and
/// what forward-auth cannot do is refused. Returns the configuration and the [`FILTER_ONLY`]
/// members the document sets.
///
/// # Errors
/// `(field, message)`: the JSON path of the value at fault and what is wrong with it.
pub fn parse(bytes: &[u8]) -> Result<(FilterConfig, Vec<&'static str>), (String, String)> {
    let mut doc: Value =
        serde_json::from_slice(bytes).map_err(|e| (".".to_owned(), format!("not JSON: {e}")))?;
    let Some(members) = doc.as_object_mut() else {
        return Err((".".to_owned(), "must be a JSON object".to_owned()));
    };
    let ignored = FILTER_ONLY
        .into_iter()
        .filter(|m| members.contains_key(*m))
        .collect();
    fill_filter_only(members);
    let filled = serde_json::to_vec(&doc).map_err(|e| (".".to_owned(), e.to_string()))?;
    // The environment is never read: the edge key is the filter's credential, not ours.
    let filter =
        FilterConfig::from_json_with_env(&filled, |_| None).map_err(|e| (e.field, e.message))?;
    if filter.hide_credentials
        && let Some(i) = filter
            .key_sources
            .iter()
            .position(|s| matches!(s, KeySource::Query(_)))
    {
        return Err((
            format!("key_sources[{i}]"),
            "a query-string key cannot be hidden from the upstream by forward-auth (Envoy's \
             ext_authz HTTP service and the forward-auth proxies cannot rewrite the upstream \
             path): use a header, bearer or cookie source, or set hide_credentials to false"
                .to_owned(),
        ));
    }
    Ok((filter, ignored))
}

/// Placeholders for the members the filter's parser requires and forward-auth ignores.
fn fill_filter_only(members: &mut Map<String, Value>) {
    for member in ["cluster", "authority"] {
        members
            .entry(member)
            .or_insert_with(|| Value::from("forward-auth"));
    }
    if !members.contains_key("edge_key") && !members.contains_key("edge_key_env") {
        members.insert(
            "edge_key_env".to_owned(),
            Value::from("KEYGATE_FORWARD_AUTH_UNUSED"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> (String, String) {
        match parse(json.as_bytes()) {
            Ok((c, _)) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_filter_only_members_may_be_left_out() {
        let (c, ignored) =
            parse(br#"{"routes":[{"path_prefix":"/health","anonymous":true}]}"#).expect("parses");
        assert!(ignored.is_empty());
        assert!(c.routes[0].anonymous);
        assert!(c.hide_credentials);
        assert_eq!(c.edge_key, None);
    }

    #[test]
    fn the_filters_own_file_is_accepted_and_its_link_members_ignored() {
        let json = br#"{"cluster":"keygate_control_plane","authority":"cp:8080",
            "edge_key_env":"KEYGATE_EDGE_KEY","sync_interval_ms":1000,"long_poll_wait_s":20,
            "max_staleness_s":300,"failure_mode":"closed","hide_credentials":true,
            "usage_report_interval_ms":10000,
            "routes":[{"path_prefix":"/healthz","anonymous":true},{"path_prefix":"/","required_scopes":[]}]}"#;
        let (c, ignored) = parse(json).expect("parses");
        assert_eq!(
            ignored,
            [
                "cluster",
                "authority",
                "edge_key_env",
                "sync_interval_ms",
                "long_poll_wait_s",
                "usage_report_interval_ms"
            ]
        );
        // The variable is never read from the environment.
        assert_eq!(c.edge_key, None);
        assert_eq!(c.routes.len(), 2);
    }

    #[test]
    fn errors_name_the_field_as_the_filter_does() {
        assert_eq!(err("[]").0, ".");
        assert_eq!(err("not json").0, ".");
        assert_eq!(err(r#"{"bogus":1}"#).0, "bogus");
        assert_eq!(
            err(r#"{"routes":[{"path_prefix":"x"}]}"#).0,
            "routes[0].path_prefix"
        );
        assert_eq!(err(r#"{"cluster":""}"#).0, "cluster");
        assert_eq!(
            err(r#"{"key_sources":[{"header":"bad name"}]}"#).0,
            "key_sources[0].header"
        );
    }

    #[test]
    fn a_hidden_query_key_is_refused_and_a_visible_one_accepted() {
        let (field, message) =
            err(r#"{"key_sources":[{"header":"x-api-key"},{"query":"api_key"}]}"#);
        assert_eq!(field, "key_sources[1]");
        assert!(message.contains("hide_credentials"), "{message}");
        let (c, _) = parse(br#"{"key_sources":[{"query":"api_key"}],"hide_credentials":false}"#)
            .expect("parses");
        assert_eq!(c.key_sources, [KeySource::Query("api_key".into())]);
    }

    #[test]
    fn open_needs_a_configuration() {
        let args = ForwardAuthArgs {
            config: None,
            open: true,
        };
        assert!(matches!(
            Settings::load(&args),
            Err(SettingsError::OpenWithoutConfig)
        ));
        assert!(
            Settings::load(&ForwardAuthArgs::default())
                .expect("off")
                .is_none()
        );
        let missing = ForwardAuthArgs {
            config: Some(PathBuf::from("/nonexistent/keygate-forward-auth.json")),
            open: false,
        };
        let e = Settings::load(&missing).expect_err("missing file");
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }
}
