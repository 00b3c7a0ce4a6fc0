//! The harness's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading, configuring or driving a filter.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The module file could not be read.
    #[error("cannot read module {path}: {source}")]
    ReadModule {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly module (or wasmtime cannot compile them).
    #[error("invalid wasm module: {0}")]
    InvalidModule(String),
    /// The module exports no `proxy_abi_version_0_2_1` (or `_0_2_0`) function.
    #[error(
        "module exports no supported proxy-wasm ABI version (expected proxy_abi_version_0_2_1 or proxy_abi_version_0_2_0)"
    )]
    MissingAbiVersion,
    /// The module imports functions this host does not provide (or with other signatures).
    #[error("module has unsatisfiable imports: {}", .0.join(", "))]
    UnsatisfiedImports(Vec<String>),
    /// The module exports neither `proxy_on_memory_allocate` nor `malloc`, or no `memory`.
    #[error("module lacks required export `{0}`")]
    MissingExport(String),
    /// Instantiation, `_initialize`/`_start`, or a lifecycle callback trapped.
    #[error("wasm trap in {during}: {message}")]
    Trap {
        /// The callback that trapped.
        during: String,
        /// The trap message with the guest's panic message and backtrace.
        message: String,
    },
    /// `proxy_on_vm_start` returned false.
    #[error("proxy_on_vm_start returned false (VM start failed)")]
    VmStartFailed,
    /// `proxy_on_configure` returned false.
    #[error("proxy_on_configure returned false (plugin configuration rejected)")]
    ConfigureFailed,
    /// The harness was asked for something that does not exist.
    #[error("unknown {kind} `{name}`")]
    Unknown {
        /// What was looked up.
        kind: &'static str,
        /// The name or id.
        name: String,
    },
    /// Bad input to the harness itself (configuration, scenario file).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A stream ended otherwise than the caller required ([`crate::baseline`]).
    #[error("expected the stream to end as {expected}, got {got}")]
    UnexpectedOutcome {
        /// The required disposition.
        expected: String,
        /// The outcome.
        got: String,
    },
    /// Wasmtime failed outside of a guest call.
    #[error("wasmtime: {0}")]
    Engine(String),
}

/// Result alias of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
