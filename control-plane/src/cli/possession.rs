//! `keygate revoke-found <file>`: hands keys someone found to `POST
//! /v1/keys/revoke-by-possession` (no credential needed), one key per line from a file or `-`
//! for stdin (never on the command line, where other users' `ps` would see them), in batches
//! of 1,000.

use std::io::Read as _;

use serde_json::json;

use super::{CliError, Client, ClientArgs};

/// Reads the keys and hands them in; returns what to print.
///
/// # Errors
/// The file cannot be read, holds no key, or the API refuses a batch.
pub async fn run_revoke_found(client: &ClientArgs, file: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| CliError::Input(format!("reading {file}: {e}")))?;
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if keys.is_empty() {
        return Err(CliError::Input(format!("{file} holds no key")));
    }
    let api = Client::anonymous(client);
    let mut sent = 0;
    for batch in keys.chunks(1000) {
        api.call(
            reqwest::Method::POST,
            "/v1/keys/revoke-by-possession",
            Some(json!({ "keys": batch })),
        )
        .await?;
        sent += batch.len();
    }
    Ok(if client.json {
        json!({ "received": sent }).to_string()
    } else {
        format!(
            "handed in {sent} key(s); every one that was live is being revoked (the answer does not say which were)"
        )
    })
}
