//! `keygate-echo`: the demo upstream; answers every request with its method, path, headers
//! and body as JSON. Prints `keygate-echo listening on http://ADDR` once bound.

use std::net::SocketAddr;

use clap::Parser;

/// Demo upstream that echoes what it receives as JSON.
#[derive(Debug, Parser)]
#[command(name = "keygate-echo", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "keygate-echo listening on http://{}",
        listener.local_addr()?
    );
    keygate_gateway::serve_echo(listener, keygate_gateway::shutdown_signal()).await;
    Ok(())
}
