//! The `keygate` binary: a thin shell over the library.

use std::process::ExitCode;

use clap::Parser;
use keygate_control_plane::cli::{Cli, Command};
use keygate_control_plane::{AppState, cli, serve};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => match run_server(*config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keygate serve: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Keys { client, command } => print(cli::run_keys(&client, command).await),
        Command::Workspace { client, command } => {
            print(cli::limits::run_workspace(&client, command).await)
        }
        Command::Audit { client, key, limit } => print(cli::run_audit(&client, key, limit).await),
        Command::Edges { client, command } => print(cli::edges::run_edges(&client, command).await),
        Command::Repos { client, command } => {
            print(keygate_control_plane::cli::github::run_repos(&client, command).await)
        }
        Command::RevokeFound { client, file } => {
            print(keygate_control_plane::cli::possession::run_revoke_found(&client, &file).await)
        }
        Command::Webhooks { client, command } => {
            print(keygate_control_plane::cli::webhooks::run_webhooks(&client, command).await)
        }
    }
}

fn print(r: Result<String, cli::CliError>) -> ExitCode {
    match r {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(cli::CliError::Behind { output }) => {
            // The write was made: its output goes where a success's does, then the warning.
            println!("{output}");
            eprintln!("keygate: some edges had not applied the change when the wait ended");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run_server(config: keygate_control_plane::Config) -> anyhow::Result<()> {
    // Logs go to stderr; stdout carries only the listening line and, on first start, the
    // generated admin key, so an operator can capture that one line apart from the logs.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let (state, generated) = AppState::new(config).await?;
    if let Some(admin) = generated {
        // Printed once, to stdout only, never through tracing.
        println!(
            "Generated bootstrap admin key (shown once, store it now): {}",
            admin.0.expose_secret()
        );
    }
    let addr = listener.local_addr()?;
    println!("keygate listening on http://{addr}");
    tracing::info!(%addr, "listening");
    serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
