//! The `keygate` command line: `serve`, and client subcommands that call the HTTP API
//! (`KEYGATE_URL`, `KEYGATE_TOKEN`) and print a table or `--json`.

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::runtime::config::Config;

mod client;
pub mod edges;
pub mod github;
pub mod limits;
pub mod possession;
pub mod webhooks;

use client::Client;

/// Keygate: API keys validated at the edge.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane.
    Serve(Box<Config>),
    /// Manage keys through the HTTP API.
    Keys {
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
        /// The key command.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// A workspace's settings (its default rate limits) through the HTTP API.
    Workspace {
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
        /// The workspace command.
        #[command(subcommand)]
        command: limits::WorkspaceCommand,
    },
    /// Read the audit log through the HTTP API.
    Audit {
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
        /// Only rows about this key.
        #[arg(long)]
        key: Option<String>,
        /// Rows to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// See the edges (proxies) that sync the key set, through the HTTP API.
    Edges {
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
        /// The edges command.
        #[command(subcommand)]
        command: edges::EdgesCommand,
    },
    /// Manage the GitHub broker's repository registry through the HTTP API.
    Repos {
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
        /// The registry command.
        #[command(subcommand)]
        command: github::ReposCommand,
    },
    /// Hand in keys someone found (one per line in FILE, `-` for stdin) to be revoked where live;
    /// no credential needed.
    RevokeFound {
        /// Connection settings (no token needed).
        #[command(flatten)]
        client: ClientArgs,
        /// File with one key per line, or `-` for stdin.
        file: String,
    },
    /// Manage webhook endpoints and read their delivery log through the HTTP API.
    Webhooks {
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
        /// The webhook command.
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
}

/// How the client reaches the API.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Control-plane URL.
    #[arg(
        long,
        env = "KEYGATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Credential (admin token or a workspace key).
    #[arg(long, env = "KEYGATE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key (prints the secret once).
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// `workspace`, `repo` or `edge`.
        #[arg(long, default_value = "workspace")]
        kind: String,
        /// Scope (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Allowed resource (repeatable).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        expires_in: Option<i64>,
        /// Owner id.
        #[arg(long)]
        owner: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// Workspace (admin only).
        #[arg(long)]
        workspace: Option<String>,
        /// Rate limits and credits.
        #[command(flatten)]
        limit_args: limits::LimitArgs,
        /// Wait up to this many seconds until every edge (not `gone`) enforces the change;
        /// prints each edge's status and exits 2 if one is still behind.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Show or change a key's rate limits and credits.
    Limits(limits::KeyLimitsArgs),
    /// List keys.
    List {
        /// Filter by status.
        #[arg(long)]
        status: Option<String>,
        /// Filter by kind.
        #[arg(long)]
        kind: Option<String>,
        /// Filter by owner.
        #[arg(long)]
        owner: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Cursor from a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one key.
    Show {
        /// Key id.
        id: String,
    },
    /// Change a key.
    Update {
        /// Key id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New scopes (repeatable; replaces the list).
        #[arg(long = "scope")]
        scopes: Option<Vec<String>>,
        /// New allow-list (repeatable; replaces the list).
        #[arg(long = "resource")]
        resources: Option<Vec<String>>,
        /// New lifetime from now, seconds.
        #[arg(long)]
        expires_in: Option<i64>,
    },
    /// Suspend a key.
    Suspend {
        /// Key id.
        id: String,
        /// Reason.
        #[arg(long)]
        reason: Option<String>,
        /// Wait up to this many seconds until every edge (not `gone`) enforces the change;
        /// prints each edge's status and exits 2 if one is still behind.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Reactivate a suspended key.
    Reactivate {
        /// Key id.
        id: String,
        /// Wait up to this many seconds until every edge (not `gone`) enforces the change;
        /// prints each edge's status and exits 2 if one is still behind.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Give a key a new secret.
    Rotate {
        /// Key id.
        id: String,
        /// Seconds the old secret keeps working.
        #[arg(long)]
        grace_period: Option<i64>,
        /// Wait up to this many seconds until every edge (not `gone`) enforces the change;
        /// prints each edge's status and exits 2 if one is still behind.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Revoke a key for good.
    Revoke {
        /// Key id.
        id: String,
        /// Reason (audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Wait up to this many seconds until every edge (not `gone`) enforces the change;
        /// prints each edge's status and exits 2 if one is still behind.
        #[arg(long)]
        wait: Option<u64>,
    },
}

/// Errors of the client commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error.
    #[error("{status}: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The request failed.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// No credential given.
    #[error("no credential: set KEYGATE_TOKEN or pass --token")]
    NoToken,
    /// The command's own input is unusable.
    #[error("{0}")]
    Input(String),
    /// The write was made, but some edge had not applied it when `--wait` ran out; `output`
    /// is what to print (the key and each edge's status).
    #[error("some edges had not applied the change when the wait ended")]
    Behind {
        /// The command's output.
        output: String,
    },
}

impl CliError {
    /// The process exit code for this error: 2 when the write was made but some edge is
    /// behind, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Behind { .. } => 2,
            _ => 1,
        }
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn fmt_time(v: &Value) -> String {
    v.as_i64()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

fn key_row(k: &Value) -> Vec<String> {
    let s = |f: &str| k[f].as_str().unwrap_or("").to_owned();
    let scopes = k["scopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        s("id"),
        s("name"),
        s("kind"),
        s("status"),
        s("display_prefix"),
        scopes,
        fmt_time(&k["expires_at"]),
        s("owner_id"),
    ]
}

const KEY_HEADERS: [&str; 8] = [
    "ID",
    "NAME",
    "KIND",
    "STATUS",
    "PREFIX",
    "SCOPES",
    "EXPIRES_AT",
    "OWNER",
];

/// Runs a `keys` subcommand and returns what to print.
pub async fn run_keys(client: &ClientArgs, cmd: KeysCommand) -> Result<String, CliError> {
    use reqwest::Method;
    let c = Client::new(client)?;
    let waited = |wait: Option<u64>| query(&[("wait", wait.map(|w| w.to_string()))]);
    let (v, issued) = match cmd {
        KeysCommand::Create {
            name,
            kind,
            scopes,
            resources,
            expires_in,
            owner,
            description,
            workspace,
            limit_args,
            wait,
        } => {
            let mut body =
                json!({"name": name, "kind": kind, "scopes": scopes, "resources": resources});
            limit_args.apply(&mut body)?;
            if let Some(e) = expires_in {
                body["expires_in"] = json!(e);
            }
            if let Some(o) = owner {
                body["owner_id"] = json!(o);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(w) = workspace {
                body["workspace_id"] = json!(w);
            }
            let path = format!("/v1/keys{}", waited(wait));
            (c.call(Method::POST, &path, Some(body)).await?, true)
        }
        KeysCommand::List {
            status,
            kind,
            owner,
            limit,
            cursor,
        } => {
            let q = query(&[
                ("status", status),
                ("kind", kind),
                ("owner_id", owner),
                ("limit", Some(limit.to_string())),
                ("cursor", cursor),
            ]);
            let v = c.call(Method::GET, &format!("/v1/keys{q}"), None).await?;
            if client.json {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            let rows: Vec<Vec<String>> = v["items"]
                .as_array()
                .map(|a| a.iter().map(key_row).collect())
                .unwrap_or_default();
            let mut out = print_table(&KEY_HEADERS, &rows);
            if let Some(n) = v["next_cursor"].as_str() {
                out.push_str(&format!("\nnext cursor: {n}"));
            }
            return Ok(out);
        }
        KeysCommand::Limits(a) => return limits::run_key_limits(client, a).await,
        KeysCommand::Show { id } => (
            c.call(Method::GET, &format!("/v1/keys/{}", urlencode(&id)), None)
                .await?,
            false,
        ),
        KeysCommand::Update {
            id,
            name,
            description,
            scopes,
            resources,
            expires_in,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(s) = scopes {
                body["scopes"] = json!(s);
            }
            if let Some(r) = resources {
                body["resources"] = json!(r);
            }
            if let Some(e) = expires_in {
                body["expires_in"] = json!(e);
            }
            (
                c.call(
                    Method::PATCH,
                    &format!("/v1/keys/{}", urlencode(&id)),
                    Some(body),
                )
                .await?,
                false,
            )
        }
        KeysCommand::Suspend { id, reason, wait } => (
            c.call(
                Method::POST,
                &format!("/v1/keys/{}/suspend{}", urlencode(&id), waited(wait)),
                Some(json!({"reason": reason})),
            )
            .await?,
            false,
        ),
        KeysCommand::Reactivate { id, wait } => (
            c.call(
                Method::POST,
                &format!("/v1/keys/{}/reactivate{}", urlencode(&id), waited(wait)),
                None,
            )
            .await?,
            false,
        ),
        KeysCommand::Rotate {
            id,
            grace_period,
            wait,
        } => (
            c.call(
                Method::POST,
                &format!("/v1/keys/{}/rotate{}", urlencode(&id), waited(wait)),
                Some(json!({"grace_period": grace_period})),
            )
            .await?,
            true,
        ),
        KeysCommand::Revoke { id, reason, wait } => (
            c.call(
                Method::POST,
                &format!("/v1/keys/{}/revoke{}", urlencode(&id), waited(wait)),
                Some(json!({"reason": reason})),
            )
            .await?,
            false,
        ),
    };
    let report = edges::propagation_report(&v);
    let out = if client.json {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else {
        let mut out = if issued {
            let table = print_table(&KEY_HEADERS, &[key_row(&v["key"])]);
            format!(
                "{table}\n\nsecret (shown once, store it now): {}",
                v["secret"].as_str().unwrap_or("")
            )
        } else {
            print_table(&KEY_HEADERS, &[key_row(&v)])
        };
        if let Some((text, _)) = &report {
            out.push_str("\n\n");
            out.push_str(text);
        }
        out
    };
    match report {
        Some((_, false)) => Err(CliError::Behind { output: out }),
        _ => Ok(out),
    }
}

/// Runs `keygate audit` and returns what to print.
pub async fn run_audit(
    client: &ClientArgs,
    key: Option<String>,
    limit: i64,
) -> Result<String, CliError> {
    let c = Client::new(client)?;
    let q = query(&[("key_id", key), ("limit", Some(limit.to_string()))]);
    let v = c
        .call(reqwest::Method::GET, &format!("/v1/audit{q}"), None)
        .await?;
    if client.json {
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let rows: Vec<Vec<String>> = v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    vec![
                        r["id"].to_string(),
                        fmt_time(&r["at"]),
                        r["action"].as_str().unwrap_or("").to_owned(),
                        r["key_id"].as_str().unwrap_or("-").to_owned(),
                        r["actor"]["name"].as_str().unwrap_or("").to_owned(),
                        r["reason"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(print_table(
        &["ID", "AT", "ACTION", "KEY", "ACTOR", "REASON"],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = print_table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }

    #[test]
    fn query_encodes() {
        assert_eq!(query(&[("a", Some("x y".into())), ("b", None)]), "?a=x%20y");
        assert_eq!(query(&[("b", None)]), "");
    }
}
