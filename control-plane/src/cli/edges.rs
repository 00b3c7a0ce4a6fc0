//! `keygate edges list` (the fleet: a table or `--json`) and the propagation report that key
//! writes print with `--wait` (each edge applied or behind; behind is a non-zero exit).

use clap::Subcommand;
use serde_json::Value;

use super::client::Client;
use super::{CliError, ClientArgs, fmt_time, print_table};

/// Edge subcommands.
#[derive(Debug, Subcommand)]
pub enum EdgesCommand {
    /// List the edges (proxies) that sync the key set: identity, applied revision, lag, state.
    List,
}

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Runs an `edges` subcommand and returns what to print.
pub async fn run_edges(client: &ClientArgs, cmd: EdgesCommand) -> Result<String, CliError> {
    let c = Client::new(client)?;
    match cmd {
        EdgesCommand::List => {
            let v = c.call(reqwest::Method::GET, "/v1/edges", None).await?;
            if client.json {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            let rows: Vec<Vec<String>> = v["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            vec![
                                opt(&e["edge_id"]),
                                opt(&e["node_id"]),
                                opt(&e["address"]),
                                opt(&e["state"]),
                                opt(&e["applied_revision"]),
                                opt(&e["lag_revisions"]),
                                opt(&e["lag_seconds"]),
                                opt(&e["workers"]),
                                fmt_time(&e["last_seen"]),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut out = print_table(
                &[
                    "EDGE",
                    "NODE",
                    "ADDRESS",
                    "STATE",
                    "REVISION",
                    "LAG",
                    "LAG_S",
                    "WORKERS",
                    "LAST_SEEN",
                ],
                &rows,
            );
            out.push_str(&format!("\ncurrent revision: {}", opt(&v["revision"])));
            Ok(out)
        }
    }
}

/// The propagation report of a write's answer (`propagation`), and whether every edge applied
/// it; `None` when the answer has none.
pub fn propagation_report(answer: &Value) -> Option<(String, bool)> {
    let p = answer.get("propagation")?;
    let edges = p["edges"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = edges
        .iter()
        .map(|e| {
            vec![
                opt(&e["edge_id"]),
                opt(&e["node_id"]),
                opt(&e["state"]),
                opt(&e["applied_revision"]),
                opt(&e["status"]),
            ]
        })
        .collect();
    let complete = p["complete"].as_bool().unwrap_or(false);
    let behind: Vec<String> = edges
        .iter()
        .filter(|e| e["status"] != "applied")
        .map(|e| match e["node_id"].as_str() {
            Some(n) => format!("{} ({n})", opt(&e["edge_id"])),
            None => opt(&e["edge_id"]),
        })
        .collect();
    let mut out = format!(
        "revision {}: {} after {} ms",
        opt(&p["revision"]),
        if complete {
            format!("applied by every edge ({})", edges.len())
        } else {
            format!("{} of {} edges behind", behind.len(), edges.len())
        },
        opt(&p["waited_ms"]),
    );
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&print_table(
            &["EDGE", "NODE", "STATE", "REVISION", "STATUS"],
            &rows,
        ));
    }
    if !complete {
        out.push_str(&format!("\nbehind: {}", behind.join(", ")));
    }
    Some((out, complete))
}
