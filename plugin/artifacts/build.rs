//! Builds `keygate-plugin` to `wasm32-wasip1` (the `wasm` profile) with a nested cargo whose target
//! directory lives under OUT_DIR, so it never waits on the outer build's lock; keeps only the
//! filter's own callbacks among the module's exports (`src/exports.rs`); and writes the module's
//! path as a constant.

#[path = "../src/callbacks.rs"]
mod callbacks;
#[path = "src/exports.rs"]
mod exports;

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let Ok(manifest) = std::env::var("CARGO_MANIFEST_DIR") else {
        panic!("CARGO_MANIFEST_DIR is not set");
    };
    let manifest = PathBuf::from(manifest);
    let Some(plugin_dir) = manifest.parent().map(Path::to_owned) else {
        panic!("the artifacts crate lives in plugin/artifacts");
    };
    let Some(workspace) = plugin_dir.parent().map(Path::to_owned) else {
        panic!("plugin/ lives in the workspace root");
    };
    let Ok(out_dir) = std::env::var("OUT_DIR") else {
        panic!("OUT_DIR is not set");
    };
    let out_dir = PathBuf::from(out_dir);
    let target_dir = out_dir.join("wasm-target");
    // Under another toolchain (`cargo +nightly fuzz …` sets RUSTUP_TOOLCHAIN, CARGO and RUSTC to
    // nightly's, which has no wasm target here), build the filter with the workspace's pinned
    // toolchain: rustup's `cargo` proxy in the workspace reads rust-toolchain.toml.
    let other_toolchain = std::env::var_os("RUSTUP_TOOLCHAIN").is_some();
    let cargo = match std::env::var("CARGO") {
        Ok(cargo) if !other_toolchain => cargo,
        _ => "cargo".to_owned(),
    };

    let mut command = Command::new(cargo);
    if other_toolchain {
        for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC"] {
            command.env_remove(var);
        }
    }
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--profile",
            "wasm",
            "--target",
            "wasm32-wasip1",
            "-p",
            "keygate-plugin",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy-driver, coverage) are not for the wasm build.
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
    let status = match command.status() {
        Ok(s) => s,
        Err(e) => panic!("could not run cargo to build the filter: {e}"),
    };
    assert!(
        status.success(),
        "building keygate-plugin for wasm32-wasip1 failed: {status}"
    );
    let built = target_dir.join("wasm32-wasip1/wasm/keygate_plugin.wasm");
    let module = match std::fs::read(&built) {
        Ok(m) => m,
        Err(e) => panic!("cannot read {}: {e}", built.display()),
    };
    let trimmed = match exports::keep_callbacks(&module, callbacks::CALLBACKS) {
        Ok(trimmed) => trimmed,
        Err(e) => panic!("cannot trim the exports of {}: {e}", built.display()),
    };
    // A name in the list that the module does not export (a typo, a callback the SDK renamed)
    // would leave that callback unexported without a word: refuse the build instead.
    let kept = exports::names(&trimmed).unwrap_or_default();
    for callback in callbacks::CALLBACKS {
        assert!(
            kept.iter().any(|k| k == callback),
            "{callback} is in plugin/src/callbacks.rs but the built module does not export it"
        );
    }
    let wasm = out_dir.join("keygate_plugin.wasm");
    if let Err(e) = std::fs::write(&wasm, trimmed) {
        panic!("cannot write {}: {e}", wasm.display());
    }
    let consts = format!(
        "/// `keygate-plugin` compiled to wasm32-wasip1 (the `wasm` profile), exporting only the filter's\n/// own callbacks (`keygate_plugin::callbacks::CALLBACKS`).\npub const KEYGATE_PLUGIN_WASM: &str = {:?};\n",
        wasm.display().to_string()
    );
    if let Err(e) = std::fs::write(out_dir.join("artifacts.rs"), consts) {
        panic!("could not write artifacts.rs: {e}");
    }
    for dir in [
        "plugin/src",
        "plugin/Cargo.toml",
        "plugin/core/src",
        "plugin/core/Cargo.toml",
        "protocol/src",
        "protocol/Cargo.toml",
        "Cargo.lock",
        // the `wasm` profile and the wasm target's flags
        "Cargo.toml",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/exports.rs");
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
}
