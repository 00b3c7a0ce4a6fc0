//! Writes the filter module built by this crate (`wasm` profile, exports trimmed to the filter's
//! own callbacks) to the path given, or prints where it is: the file to deploy next to Envoy.
//!
//! `cargo run -p keygate-plugin-artifacts --bin keygate-plugin-wasm -- keygate_plugin.wasm`

use anyhow::Context;
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;

fn main() -> anyhow::Result<()> {
    match std::env::args_os().nth(1) {
        None => println!("{KEYGATE_PLUGIN_WASM}"),
        Some(to) => {
            std::fs::copy(KEYGATE_PLUGIN_WASM, &to).with_context(|| {
                format!("copying {KEYGATE_PLUGIN_WASM} to {}", to.to_string_lossy())
            })?;
            println!("{}", to.to_string_lossy());
        }
    }
    Ok(())
}
