//! Paths of the harness test filters, compiled to `wasm32-wasip1` by this crate's build script.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
