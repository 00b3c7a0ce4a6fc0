//! HTTP routes: thin handlers over the domain rules and the store.

pub mod forward_auth;
pub mod keys;
pub mod keyset;
pub mod system;
