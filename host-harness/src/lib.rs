//! A wasmtime implementation of the proxy-wasm host ABI v0.2.1.
