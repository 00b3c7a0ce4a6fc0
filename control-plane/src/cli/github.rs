//! `keygate repos add|list|remove`: the repository registry through the HTTP API.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{CliError, Client, ClientArgs};

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
            let v = Client::new(client)?
                .call(
                    Method::POST,
                    "/v1/repositories",
                    Some(
                        json!({"organization": organization, "repository": repository, "app": app}),
                    ),
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
            let v = Client::new(client)?
                .call(Method::GET, &format!("/v1/repositories{q}"), None)
                .await?;
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
            Client::new(client)?
                .call(Method::DELETE, &format!("/v1/repositories/{id}"), None)
                .await?;
            Ok(if client.json {
                json!({"deleted": id}).to_string()
            } else {
                format!("removed repository {id}")
            })
        }
    }
}
