//! Broker configuration: the GitHub Apps (identity, private keys, API base URL) and the
//! permission policy, read from flags or the environment and checked at start-up so a bad key
//! file or URL stops the service with a clear message.

use std::path::PathBuf;
use std::time::Duration;

use super::Permissions;

/// Default API base URL.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The broker's command-line flags; the `serve` command flattens them.
#[derive(Debug, Clone, clap::Args)]
pub struct GithubArgs {
    /// A GitHub App the broker acts as (repeatable; in the environment separate Apps with `;`):
    /// `name=main,app-id=123,private-key=/keys/a.pem[,private-key=/keys/b.pem][,client-id=Iv23…]
    /// [,api-url=https://ghe.example.com/api/v3][,stateless-tokens=enabled|disabled]`. Keys may be
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`, as GitHub issues them) or PKCS#8; with several, the last
    /// listed is the newest and signs. `iss` is the client id when given, else the app id. The
    /// first App is the default.
    #[arg(
        long = "github-app",
        env = "KEYGATE_GITHUB_APPS",
        value_delimiter = ';'
    )]
    pub github_apps: Vec<String>,

    /// Key for the internal `POST /api/github/tokens` endpoint (compared in constant time);
    /// without it that endpoint answers 500 (not configured).
    #[arg(
        long = "internal-api-key",
        env = "KEYGATE_INTERNAL_API_KEY",
        hide_env_values = true
    )]
    pub internal_api_key: Option<String>,

    /// GitHub permissions a `read` repo key's token gets.
    #[arg(
        long = "github-read-permissions",
        env = "KEYGATE_GITHUB_READ_PERMISSIONS",
        default_value = "contents=read"
    )]
    pub read_permissions: String,

    /// GitHub permissions a `write` repo key's (or a workspace key's) token gets.
    #[arg(
        long = "github-write-permissions",
        env = "KEYGATE_GITHUB_WRITE_PERMISSIONS",
        default_value = "contents=write"
    )]
    pub write_permissions: String,

    /// GitHub permissions tokens from the internal endpoint get.
    #[arg(
        long = "github-internal-permissions",
        env = "KEYGATE_GITHUB_INTERNAL_PERMISSIONS",
        default_value = "contents=write"
    )]
    pub internal_permissions: String,

    /// Also return the App JWT from `POST /v1/github/tokens` (off by default).
    #[arg(long = "github-expose-app-jwt", env = "KEYGATE_GITHUB_EXPOSE_APP_JWT")]
    pub expose_app_jwt: bool,

    /// Seconds a "not installed" answer from GitHub is cached.
    #[arg(long = "github-not-installed-ttl", default_value_t = 30)]
    pub not_installed_ttl_secs: u64,

    /// Timeout of one GitHub request, in seconds.
    #[arg(long = "github-timeout", default_value_t = 10)]
    pub timeout_secs: u64,
}

impl Default for GithubArgs {
    /// The flags' defaults: no App, no internal key, `contents` read/write policy.
    fn default() -> Self {
        Self {
            github_apps: Vec::new(),
            internal_api_key: None,
            read_permissions: "contents=read".into(),
            write_permissions: "contents=write".into(),
            internal_permissions: "contents=write".into(),
            expose_app_jwt: false,
            not_installed_ttl_secs: 30,
            timeout_secs: 10,
        }
    }
}

/// A configuration problem, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--github-app` value is malformed.
    #[error("--github-app `{spec}`: {message}")]
    Spec {
        /// The spec, without key paths' contents.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// A private key file cannot be read or is not a usable RSA key.
    #[error("GitHub App `{app}`: private key {path}: {message}")]
    Key {
        /// The App's name.
        app: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The API base URL is unusable.
    #[error("GitHub App `{app}`: api-url `{url}`: {message}")]
    Url {
        /// The App's name.
        app: String,
        /// The URL given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("GitHub HTTP client: {0}")]
    Client(String),
    /// A permission list is malformed.
    #[error("{flag}: {message}")]
    Permissions {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// One App, validated, with its keys loaded.
#[derive(Clone)]
pub struct AppConfig {
    /// Name used in the registry and API (`default` when not given).
    pub name: String,
    /// Numeric app id, if given.
    pub app_id: Option<u64>,
    /// Client id (`Iv23…`), if given; preferred as `iss`.
    pub client_id: Option<String>,
    /// Private keys, oldest first; the last signs.
    pub keys: Vec<jsonwebtoken::EncodingKey>,
    /// Where the keys came from (for messages).
    pub key_paths: Vec<PathBuf>,
    /// API base URL without a trailing slash.
    pub api_url: String,
    /// Force stateless (`true`) or classic (`false`) tokens; `None` lets GitHub choose.
    pub stateless_tokens: Option<bool>,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("name", &self.name)
            .field("app_id", &self.app_id)
            .field("client_id", &self.client_id)
            .field("key_paths", &self.key_paths)
            .field("api_url", &self.api_url)
            .field("stateless_tokens", &self.stateless_tokens)
            .finish_non_exhaustive()
    }
}

impl AppConfig {
    /// The JWT `iss`: the client id if set, else the app id.
    pub fn issuer(&self) -> serde_json::Value {
        match (&self.client_id, self.app_id) {
            (Some(c), _) => serde_json::Value::String(c.clone()),
            (None, Some(id)) => serde_json::Value::from(id),
            (None, None) => serde_json::Value::Null,
        }
    }
}

/// The validated broker configuration.
#[derive(Debug, Clone, Default)]
pub struct GithubConfig {
    /// The Apps; the first is the default.
    pub apps: Vec<AppConfig>,
    /// The internal endpoint's key.
    pub internal_api_key: Option<String>,
    /// Permissions for `read` repo keys.
    pub read_permissions: Permissions,
    /// Permissions for `write` repo keys and workspace keys.
    pub write_permissions: Permissions,
    /// Permissions for the internal endpoint.
    pub internal_permissions: Permissions,
    /// Whether `/v1/github/tokens` returns the App JWT.
    pub expose_app_jwt: bool,
    /// How long "not installed" is cached.
    pub not_installed_ttl: Duration,
    /// Timeout of one GitHub request.
    pub timeout: Duration,
}

impl GithubConfig {
    /// Validates the flags and loads every key file.
    ///
    /// # Errors
    /// The first problem found, naming the App, file or flag.
    pub fn from_args(args: &GithubArgs) -> Result<Self, ConfigError> {
        let perms = |flag: &'static str, s: &str| {
            super::parse_permissions(s)
                .map_err(|message| ConfigError::Permissions { flag, message })
        };
        let mut apps: Vec<AppConfig> = Vec::new();
        for spec in args
            .github_apps
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            let app = parse_app(spec)?;
            if apps.iter().any(|a| a.name == app.name) {
                return Err(ConfigError::Spec {
                    spec: spec.to_owned(),
                    message: format!("two Apps are named `{}`", app.name),
                });
            }
            apps.push(app);
        }
        Ok(Self {
            apps,
            internal_api_key: args.internal_api_key.clone().filter(|k| !k.is_empty()),
            read_permissions: perms("--github-read-permissions", &args.read_permissions)?,
            write_permissions: perms("--github-write-permissions", &args.write_permissions)?,
            internal_permissions: perms(
                "--github-internal-permissions",
                &args.internal_permissions,
            )?,
            expose_app_jwt: args.expose_app_jwt,
            not_installed_ttl: Duration::from_secs(args.not_installed_ttl_secs),
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
        })
    }
}

fn parse_app(spec: &str) -> Result<AppConfig, ConfigError> {
    let bad = |message: String| ConfigError::Spec {
        spec: spec.to_owned(),
        message,
    };
    let mut name = None;
    let mut app_id = None;
    let mut client_id = None;
    let mut key_paths = Vec::new();
    let mut api_url = None;
    let mut stateless = None;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(bad(format!("`{part}` must be KEY=VALUE")));
        };
        let v = v.trim();
        match k.trim() {
            "name" => {
                if v.is_empty()
                    || v.len() > 64
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(bad(format!("name `{v}` must be 1-64 of [A-Za-z0-9-_.]")));
                }
                name = Some(v.to_owned());
            }
            "app-id" => {
                app_id = Some(
                    v.parse::<u64>()
                        .map_err(|_| bad(format!("app-id `{v}` is not a number")))?,
                )
            }
            "client-id" => {
                if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad(format!("client-id `{v}` must be alphanumeric")));
                }
                client_id = Some(v.to_owned());
            }
            "private-key" => key_paths.push(PathBuf::from(v)),
            "api-url" => api_url = Some(v.to_owned()),
            "stateless-tokens" => {
                stateless = Some(match v {
                    "enabled" => true,
                    "disabled" => false,
                    _ => {
                        return Err(bad(format!(
                            "stateless-tokens `{v}` must be enabled or disabled"
                        )));
                    }
                })
            }
            other => return Err(bad(format!("unknown setting `{other}`"))),
        }
    }
    if app_id.is_none() && client_id.is_none() {
        return Err(bad("needs app-id or client-id".into()));
    }
    if key_paths.is_empty() {
        return Err(bad("needs at least one private-key=PATH".into()));
    }
    let name = name.unwrap_or_else(|| "default".to_owned());
    let api_url = validate_url(&name, api_url.as_deref().unwrap_or(DEFAULT_API_URL))?;
    let keys = key_paths
        .iter()
        .map(|p| load_key(&name, p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppConfig {
        name,
        app_id,
        client_id,
        keys,
        key_paths,
        api_url,
        stateless_tokens: stateless,
    })
}

/// Checks an API base URL: `https://…` (plain `http` only for loopback hosts, for tests), no
/// query or fragment. GitHub Enterprise Server is `https://HOST/api/v3`.
fn validate_url(app: &str, url: &str) -> Result<String, ConfigError> {
    let bad = |message: &str| ConfigError::Url {
        app: app.to_owned(),
        url: url.to_owned(),
        message: message.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("not a URL ({e})")))?;
    let host = parsed.host_str().ok_or_else(|| bad("has no host"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if matches!(host, "localhost" | "127.0.0.1" | "[::1]") => {}
        "http" => return Err(bad("must be https (plain http only for localhost)")),
        _ => return Err(bad("must be https")),
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(bad("must not have a query, fragment or credentials"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

fn load_key(app: &str, path: &PathBuf) -> Result<jsonwebtoken::EncodingKey, ConfigError> {
    let bad = |message: String| ConfigError::Key {
        app: app.to_owned(),
        path: path.clone(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(bad(
            "is encrypted; give an unencrypted PKCS#1 or PKCS#8 key".into(),
        ));
    }
    if !text.contains("-----BEGIN RSA PRIVATE KEY-----")
        && !text.contains("-----BEGIN PRIVATE KEY-----")
    {
        return Err(bad("not an RSA private key in PEM form (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`)".into()));
    }
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(|e| {
        bad(format!(
            "not an RSA private key in PEM form (PKCS#1 or PKCS#8): {e}"
        ))
    })?;
    // The PEM parser does not check the key itself; a trial signature does.
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({}),
        &key,
    )
    .map_err(|e| bad(format!("cannot sign RS256 with it: {e}")))?;
    Ok(key)
}
