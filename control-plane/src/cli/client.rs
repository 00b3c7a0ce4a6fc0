//! The one HTTP client of the `keygate` commands: the base URL and bearer token from
//! [`ClientArgs`], JSON in and out, and the API's error body turned into [`CliError::Api`].

use serde_json::Value;

use super::{CliError, ClientArgs};

/// A client for the control plane's API.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Result<Self, CliError> {
        let token = args
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or(CliError::NoToken)?;
        Ok(Self {
            http: reqwest::Client::new(),
            base: args.url.trim_end_matches('/').to_owned(),
            token: Some(token),
        })
    }

    /// A client that presents no credential (the unauthenticated routes).
    pub(crate) fn anonymous(args: &ClientArgs) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: args.url.trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(CliError::Api {
                status: status.as_u16(),
                code: v["error"]["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
                message: v["error"]["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(v)
    }
}
