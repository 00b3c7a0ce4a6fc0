//! Builds `keygate-native-filter` (a `cdylib`) with the `release` profile, by a nested cargo
//! whose target directory lives under OUT_DIR (so it never waits on the outer build's lock and
//! the outer profile does not apply), copies the library into a directory of its own, the one
//! Envoy is pointed at, and writes its paths as constants.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let Ok(manifest) = std::env::var("CARGO_MANIFEST_DIR") else {
        panic!("CARGO_MANIFEST_DIR is not set");
    };
    let manifest = PathBuf::from(manifest);
    let Some(workspace) = manifest.parent().and_then(Path::parent).map(Path::to_owned) else {
        panic!("the artifacts crate lives in native-filter/artifacts");
    };
    let Ok(out_dir) = std::env::var("OUT_DIR") else {
        panic!("OUT_DIR is not set");
    };
    let out_dir = PathBuf::from(out_dir);
    let target_dir = out_dir.join("native-target");
    // Under another toolchain (`cargo +nightly …` sets RUSTUP_TOOLCHAIN, CARGO and RUSTC), build
    // with the workspace's pinned toolchain: rustup's `cargo` proxy reads rust-toolchain.toml.
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
        .args(["build", "--release", "-p", "keygate-native-filter"])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy-driver, coverage) are not for the module.
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
        Err(e) => panic!("could not run cargo to build the native filter: {e}"),
    };
    assert!(
        status.success(),
        "building keygate-native-filter failed: {status}"
    );
    let built = target_dir.join("release/libkeygate_native_filter.so");
    let dir = out_dir.join("module");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let so = dir.join("libkeygate_native_filter.so");
    // Copied, not linked: a later build of the nested target must not change a loaded library.
    if let Err(e) = std::fs::copy(&built, &so) {
        panic!("cannot copy {} to {}: {e}", built.display(), so.display());
    }
    let consts = format!(
        "/// The directory holding the module (`libkeygate_native_filter.so`): Envoy's module search path.\n\
         pub const KEYGATE_NATIVE_FILTER_DIR: &str = {:?};\n\
         /// The module itself.\n\
         pub const KEYGATE_NATIVE_FILTER_SO: &str = {:?};\n",
        dir.display().to_string(),
        so.display().to_string()
    );
    if let Err(e) = std::fs::write(out_dir.join("artifacts.rs"), consts) {
        panic!("could not write artifacts.rs: {e}");
    }
    for path in [
        "native-filter/src",
        "native-filter/Cargo.toml",
        "plugin/core/src",
        "plugin/core/Cargo.toml",
        "protocol/src",
        "protocol/Cargo.toml",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
}
