//! Builds the harness test filters to `wasm32-wasip1` with a nested cargo (its own target
//! directory under OUT_DIR, so it never waits on the outer build's lock) and writes their
//! paths as constants.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILTERS: &[(&str, &str, &str)] =
    &[("SDK_FILTER", "harness-sdk-filter", "harness_sdk_filter")];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let filters_dir = manifest_dir.parent().expect("test-filters dir").to_owned();
    let workspace = filters_dir
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
        .to_owned();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out_dir.join("wasm-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg("wasm32-wasip1")
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package, _) in FILTERS {
        command.arg("-p").arg(package);
    }
    // The outer build's flags and wrappers (e.g. clippy-driver) are not for the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("run cargo for the wasm test filters");
    assert!(
        status.success(),
        "building the wasm test filters failed: {status}"
    );

    let mut consts = String::new();
    for (name, package, lib) in FILTERS {
        let wasm = target_dir
            .join("wasm32-wasip1/release")
            .join(format!("{lib}.wasm"));
        assert!(wasm.exists(), "missing {}", wasm.display());
        consts.push_str(&format!(
            "/// `{package}` compiled to wasm32-wasip1.\npub const {name}: &str = {:?};\n",
            wasm.display().to_string()
        ));
        let crate_dir = filters_dir.join(package.trim_start_matches("harness-"));
        println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            crate_dir.join("Cargo.toml").display()
        );
    }
    std::fs::write(out_dir.join("artifacts.rs"), consts).expect("write artifacts.rs");
    println!("cargo:rerun-if-changed=build.rs");
}
