//! `keygate webhooks add|list|remove|deliveries`: webhook endpoints and their delivery log
//! through the HTTP API.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{CliError, Client, ClientArgs};

/// Webhook subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint (prints its signing secret once).
    Add {
        /// The URL events are POSTed to.
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Event types (repeat or comma-separate): key.created, key.updated, key.suspended,
        /// key.reactivated, key.revoked, key.rotated, key.leaked, key.canary_used.
        #[arg(long = "event", value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// List endpoints.
    List,
    /// Delete an endpoint.
    Remove {
        /// Its id (`whep_…`).
        id: String,
    },
    /// Show an endpoint's delivery log, newest first.
    Deliveries {
        /// Its id (`whep_…`).
        id: String,
        /// Rows to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

fn endpoint_row(r: &Value) -> String {
    let types: Vec<&str> = r["event_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{:<37}  {:<40}  {}",
        r["id"].as_str().unwrap_or(""),
        r["url"].as_str().unwrap_or(""),
        types.join(",")
    )
}

fn attempt_row(r: &Value) -> String {
    format!(
        "{:<36}  {:<16}  {:<3}  {:<6}  {}",
        r["event_id"].as_str().unwrap_or(""),
        r["event_type"].as_str().unwrap_or(""),
        r["attempt"],
        r["status_code"]
            .as_i64()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        r["error"].as_str().unwrap_or("delivered"),
    )
}

/// Runs a `webhooks` subcommand and returns what to print.
///
/// # Errors
/// The API's or the connection's failure.
pub async fn run_webhooks(client: &ClientArgs, cmd: WebhooksCommand) -> Result<String, CliError> {
    use reqwest::Method;
    let api = Client::new(client)?;
    match cmd {
        WebhooksCommand::Add {
            endpoint,
            events,
            description,
        } => {
            let v = api
                .call(
                    Method::POST,
                    "/v1/webhooks",
                    Some(
                        json!({"url": endpoint, "event_types": events, "description": description}),
                    ),
                )
                .await?;
            Ok(if client.json {
                v.to_string()
            } else {
                format!(
                    "{}\nsigning secret (shown once): {}",
                    endpoint_row(&v),
                    v["secret"].as_str().unwrap_or("")
                )
            })
        }
        WebhooksCommand::List => {
            let v = api.call(Method::GET, "/v1/webhooks", None).await?;
            if client.json {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            let mut out = format!("{:<37}  {:<40}  {}", "ID", "URL", "EVENTS");
            for r in v["items"].as_array().into_iter().flatten() {
                out.push('\n');
                out.push_str(&endpoint_row(r));
            }
            Ok(out)
        }
        WebhooksCommand::Remove { id } => {
            api.call(Method::DELETE, &format!("/v1/webhooks/{id}"), None)
                .await?;
            Ok(if client.json {
                json!({"deleted": id}).to_string()
            } else {
                format!("removed webhook endpoint {id}")
            })
        }
        WebhooksCommand::Deliveries { id, limit } => {
            let v = api
                .call(
                    Method::GET,
                    &format!("/v1/webhooks/{id}/deliveries?limit={limit}"),
                    None,
                )
                .await?;
            if client.json {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            let mut out = format!(
                "{:<36}  {:<16}  {:<3}  {:<6}  {}",
                "EVENT", "TYPE", "TRY", "STATUS", "RESULT"
            );
            for r in v["items"].as_array().into_iter().flatten() {
                out.push('\n');
                out.push_str(&attempt_row(r));
            }
            Ok(out)
        }
    }
}
