//! The gateway's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring or starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Envoy configuration is not YAML, or has no usable Wasm filter.
    #[error("envoy configuration: {0}")]
    EnvoyConfig(String),
    /// A command-line value is malformed.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The harness refused the module or its configuration.
    #[error(transparent)]
    Harness(#[from] keygate_host_harness::HarnessError),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A worker thread could not be started or died during start-up.
    #[error("worker thread: {0}")]
    Worker(String),
}
