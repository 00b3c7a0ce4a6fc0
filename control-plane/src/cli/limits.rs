//! Limits and credits on the command line (issue 27): `keygate keys create --limit
//! burst=100/10s --credits 500 --refill 500/daily`, `keygate keys limits ID …` (show or change
//! a key's), `keygate workspace limits WS …` (show or set a workspace's defaults), through the
//! HTTP API.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{CliError, Client, ClientArgs, query, urlencode};
use crate::domain::credits::parse_refill_arg;
use crate::domain::limits::parse_limit_arg;

/// Limits and credits given at issuance or in a change.
#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// A rate limit `NAME=LIMIT/WINDOW[@owner]` (repeatable): `burst=100/10s`,
    /// `day=5000/1d@owner` (windows `s`, `m`, `h`, `d`; `@owner` shares one pool among all the
    /// owner's keys). The key's own list replaces its workspace's defaults.
    #[arg(long = "limit", value_name = "NAME=LIMIT/WINDOW[@owner]")]
    pub limits: Vec<String>,
    /// No rate limits at all, not even the workspace's defaults.
    #[arg(long, conflicts_with = "limits")]
    pub no_limits: bool,
    /// A credit balance: each request the edges or verify count takes one.
    #[arg(long)]
    pub credits: Option<i64>,
    /// A refill `AMOUNT/INTERVAL` (`daily`, `monthly` or seconds): `500/daily`.
    #[arg(long, value_name = "AMOUNT/INTERVAL", requires = "credits")]
    pub refill: Option<String>,
}

impl LimitArgs {
    /// Adds what was given to a request body (`limits`, `credits`).
    ///
    /// # Errors
    /// [`CliError::Input`] for a malformed `--limit` or `--refill`.
    pub fn apply(&self, body: &mut Value) -> Result<(), CliError> {
        if self.no_limits {
            body["limits"] = json!([]);
        } else if !self.limits.is_empty() {
            let specs = self
                .limits
                .iter()
                .map(|l| parse_limit_arg(l).map_err(|e| CliError::Input(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            body["limits"] = serde_json::to_value(specs).unwrap_or_default();
        }
        if let Some(c) = self.credits {
            let mut credits = json!({"remaining": c});
            if let Some(r) = &self.refill {
                let spec = parse_refill_arg(r).map_err(|e| CliError::Input(e.to_string()))?;
                credits["refill"] = serde_json::to_value(spec).unwrap_or_default();
            }
            body["credits"] = credits;
        }
        Ok(())
    }
}

/// `keygate keys limits ID …`: with no option, shows the key's limits and credits.
#[derive(Debug, Clone, Args)]
pub struct KeyLimitsArgs {
    /// The key (`key_…`).
    pub id: String,
    /// New limits or credits.
    #[command(flatten)]
    pub set: LimitArgs,
    /// Drop the key's own limits: it inherits its workspace's defaults again.
    #[arg(long, conflicts_with_all = ["limits", "no_limits"])]
    pub inherit: bool,
    /// Drop the key's credits (unlimited).
    #[arg(long, conflicts_with = "credits")]
    pub no_credits: bool,
    /// Wait up to this many seconds until every edge enforces the change.
    #[arg(long)]
    pub wait: Option<u64>,
}

/// `keygate workspace …`.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Show, set (`--limit`, repeatable) or clear (`--clear`) a workspace's default rate
    /// limits, which every key without limits of its own holds.
    Limits {
        /// The workspace.
        workspace: String,
        /// A default limit `NAME=LIMIT/WINDOW[@owner]` (repeatable).
        #[arg(long = "limit", value_name = "NAME=LIMIT/WINDOW[@owner]")]
        limits: Vec<String>,
        /// Remove the defaults.
        #[arg(long, conflicts_with = "limits")]
        clear: bool,
    },
}

/// The limits and credits of a key view, as lines of text.
pub fn describe(v: &Value) -> String {
    let mut out = String::new();
    match v["limits"].as_array() {
        None => out.push_str("limits: the workspace's defaults\n"),
        Some(l) if l.is_empty() => out.push_str("limits: none\n"),
        Some(l) => {
            for x in l {
                out.push_str(&format!(
                    "limit {}: {} per {} s ({})\n",
                    x["name"].as_str().unwrap_or(""),
                    x["limit"],
                    x["window_s"],
                    x["pool"].as_str().unwrap_or("key")
                ));
            }
        }
    }
    let c = &v["credits"];
    if c.is_null() {
        out.push_str("credits: unlimited");
    } else {
        out.push_str(&format!("credits: {} remaining", c["remaining"]));
        if let Some(i) = c["refill_interval"].as_str() {
            out.push_str(&format!(
                ", refill to {} ({i}), next at {}",
                c["refill_amount"], c["next_refill_at"]
            ));
        }
    }
    out
}

/// Runs `keygate keys limits`.
pub async fn run_key_limits(client: &ClientArgs, a: KeyLimitsArgs) -> Result<String, CliError> {
    use reqwest::Method;
    let c = Client::new(client)?;
    let mut body = json!({});
    a.set.apply(&mut body)?;
    if a.inherit {
        body["limits"] = Value::Null;
    }
    if a.no_credits {
        body["credits"] = Value::Null;
    }
    let id = urlencode(&a.id);
    let v = if body.as_object().is_some_and(|o| o.is_empty()) {
        c.call(Method::GET, &format!("/v1/keys/{id}"), None).await?
    } else {
        let q = query(&[("wait", a.wait.map(|w| w.to_string()))]);
        c.call(
            Method::PATCH,
            &format!("/v1/keys/{id}/limits{q}"),
            Some(body),
        )
        .await?
    };
    Ok(if client.json {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else {
        describe(&v)
    })
}

/// Runs `keygate workspace …`.
pub async fn run_workspace(client: &ClientArgs, cmd: WorkspaceCommand) -> Result<String, CliError> {
    use reqwest::Method;
    let c = Client::new(client)?;
    let WorkspaceCommand::Limits {
        workspace,
        limits,
        clear,
    } = cmd;
    let path = format!("/v1/workspaces/{}/limits", urlencode(&workspace));
    let v = if clear || !limits.is_empty() {
        let mut body = json!({"default_limits": null});
        if !clear {
            LimitArgs {
                limits,
                ..LimitArgs::default()
            }
            .apply(&mut body)?;
            body["default_limits"] = body["limits"].take();
            if let Some(o) = body.as_object_mut() {
                o.remove("limits");
            }
        }
        c.call(Method::PUT, &path, Some(body)).await?
    } else {
        c.call(Method::GET, &path, None).await?
    };
    if client.json {
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let view =
        json!({"limits": v["default_limits"].clone().as_array().cloned().unwrap_or_default()});
    let text = describe(&view);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("credits")).collect();
    Ok(format!(
        "workspace {}\n{}",
        v["workspace_id"].as_str().unwrap_or(""),
        lines.join("\n")
    ))
}
