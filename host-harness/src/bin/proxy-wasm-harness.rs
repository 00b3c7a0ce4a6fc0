//! `proxy-wasm-harness`: runs any proxy-wasm filter on the requests of a JSON scenario and
//! prints the outcome as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use keygate_host_harness::{Plugin, Scenario};

/// Run a proxy-wasm (ABI v0.2.1) filter without Envoy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The filter module (.wasm, or .wat text).
    #[arg(long)]
    wasm: PathBuf,
    /// The scenario file (JSON): configuration, clusters, steps.
    #[arg(long)]
    scenario: PathBuf,
    /// Overrides the scenario's plugin configuration with this file's contents.
    #[arg(long)]
    plugin_config: Option<PathBuf>,
    /// Overrides the scenario's VM configuration with this file's contents.
    #[arg(long)]
    vm_config: Option<PathBuf>,
    /// Overrides the scenario's worker count.
    #[arg(long)]
    workers: Option<usize>,
}

fn run(args: &Args) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let mut scenario = Scenario::from_json(&text)?;
    if let Some(path) = &args.plugin_config {
        let config =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        scenario.plugin_configuration = Some(serde_json::Value::String(config));
    }
    if let Some(path) = &args.vm_config {
        scenario.vm_configuration =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    if let Some(workers) = args.workers {
        scenario.workers = Some(workers);
    }
    let plugin = Plugin::load_file(&args.wasm)?;
    let report = scenario.run(plugin)?;
    Ok(serde_json::to_string_pretty(&report)?)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let json = serde_json::json!({ "error": format!("{error:#}") });
            eprintln!("{json}");
            ExitCode::FAILURE
        }
    }
}
