//! Keygate protocol: the API key format and the key-set sync wire format shared by the control plane and the filter.
//!
//! This crate is the contract between the two halves of Keygate, so it is pure: no I/O, no
//! threads, no clocks, and it builds for `wasm32-wasip1` (the only randomness, in
//! [`key::generate`], comes from the OS through `getrandom`, which WASI provides as `random_get`).
//!
//! - [`key`]: the `<prefix>_<body><checksum>` API key format: generate, parse, checksum, display form.
//! - [`Digest`]: SHA-256 of a whole key string, compared in constant time.
//! - [`KeyId`]: UUIDv7 key identifiers, written `key_<32 lowercase hex>`.
//! - [`scope`]: scope names and resource allow-lists.
//! - [`wire`]: the versioned binary key-set format (snapshots and deltas); see `FORMAT.md`.
//! - [`keyset`]: the compact in-memory key set the filter looks keys up in.
//! - [`policy`]: a key's state (active, canary, out of credits) and rate limits, carried in the set.
//! - [`edge`]: the headers an edge sends with each key-set call (who it is, what it holds).
//! - [`canary`]: the canary hit report: what a hit carries, its size bounds.
//! - [`usage`]: the size bounds of a usage report, shared by the filter and the control plane.

pub mod canary;
mod digest;
pub mod edge;
mod hex;
mod id;
pub mod key;
pub mod keyset;
pub mod policy;
pub mod scope;
pub mod usage;
pub mod wire;

pub use digest::{Digest, HexError};
pub use id::{IdError, KeyId, KeyIdText};
