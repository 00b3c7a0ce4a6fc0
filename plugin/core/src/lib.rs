//! Keygate filter's pure core: [`config`], [`decision`], [`limits`] (rate limits counted per
//! process), [`sync`], [`usage`], tied together by
//! [`worker`] behind the [`host::Host`] seam.
//!
//! No proxy-wasm and no `unsafe`: it compiles and is tested natively (and builds for
//! `wasm32-wasip1`). Shells wrap it: the proxy-wasm filter (`keygate-plugin`, whose glue
//! implements [`host::Host`] with host calls), the control plane's forward-auth and the Envoy
//! dynamic module (both [`config`] and [`decision`] only).
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod canary;
pub mod config;
pub mod decision;
pub mod host;
pub mod limits;
pub mod sync;
pub mod usage;
pub mod worker;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_canary;
#[cfg(test)]
mod testutil;
