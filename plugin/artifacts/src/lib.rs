//! Path of the Keygate filter compiled to `wasm32-wasip1` by this crate's build script, for the
//! harness-level tests in `tests/` and for the end-to-end crate.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
