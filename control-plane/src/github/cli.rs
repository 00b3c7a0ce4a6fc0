//! `keygate repos add|list|remove`: the repository registry through the HTTP API.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::{CliError, ClientArgs};

/// Registry subcommands.
#[derive(Debug, Subcommand)]
pub enum ReposCommand {
    /// Register a repository for the GitHub token broker.
    Add {
        /// Organization or user.
        organization: String,
        /// Repository name.
        repository: String,
        /// The configured GitHub App that serves it (default: the first).
        #[arg(long)]
        app: Option<String>,
    },
    /// List registered repositories.
    List {
        /// Show ids above this one.
        #[arg(long)]
        after: Option<i64>,
        /// Rows to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Remove a repository from the registry.
    Remove {
        /// Its numeric id.
        id: i64,
    },
}

async fn call(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let token = client
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or(CliError::NoToken)?;
    let mut req = reqwest::Client::new()
        .request(
            method,
            format!("{}{path}", client.url.trim_end_matches('/')),
        )
        .bearer_auth(token);
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

fn row(r: &Value) -> String {
    let s = |f: &str| r[f].as_str().unwrap_or("").to_owned();
    let inst = r["installation_id"]
        .as_i64()
        .map(|i| i.to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "{:<6}  {:<40}  {:<12}  {}",
        r["id"],
        format!("{}/{}", s("organization"), s("repository")),
        s("app"),
        inst
    )
}

fn header() -> String {
    format!(
        "{:<6}  {:<40}  {:<12}  {}",
        "ID", "REPOSITORY", "APP", "INSTALLATION"
    )
}

/// Runs a `repos` subcommand and returns what to print.
///
/// # Errors
/// The API's or the connection's failure.
pub async fn run_repos(client: &ClientArgs, cmd: ReposCommand) -> Result<String, CliError> {
    use reqwest::Method;
    match cmd {
        ReposCommand::Add {
            organization,
            repository,
            app,
        } => {
            let v = call(
                client,
                Method::POST,
                "/v1/repositories",
                Some(json!({"organization": organization, "repository": repository, "app": app})),
            )
            .await?;
            Ok(if client.json {
                v.to_string()
            } else {
                format!("{}\n{}", header(), row(&v))
            })
        }
        ReposCommand::List { after, limit } => {
            let q = match after {
                Some(a) => format!("?after={a}&limit={limit}"),
                None => format!("?limit={limit}"),
            };
            let v = call(client, Method::GET, &format!("/v1/repositories{q}"), None).await?;
            if client.json {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            let mut out = header();
            for r in v["items"].as_array().into_iter().flatten() {
                out.push('\n');
                out.push_str(&row(r));
            }
            Ok(out)
        }
        ReposCommand::Remove { id } => {
            call(
                client,
                Method::DELETE,
                &format!("/v1/repositories/{id}"),
                None,
            )
            .await?;
            Ok(if client.json {
                json!({"deleted": id}).to_string()
            } else {
                format!("removed repository {id}")
            })
        }
    }
}
