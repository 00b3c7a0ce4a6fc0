//! The key-set wire format: a versioned, compact binary encoding of snapshots and deltas.
//!
//! A control plane answers `GET /v1/keyset` with one message ([`CONTENT_TYPE`]): a full
//! [`Snapshot`] of the key set at a revision, or a [`Delta`] from `base_revision` to `revision`.
//! Everything is little-endian. The layout is (see `FORMAT.md` for the byte tables):
//!
//! | part | size |
//! | --- | --- |
//! | header: magic `KGKS`, version `u16` (1, 2 or 3), kind `u8`, flags `u8` (= 0), revision `u64`, base revision `u64`, then six `u32` counts | 48 |
//! | string table: `string_count` end offsets (`u32`), then `string_bytes` of UTF-8 | 4·S + B |
//! | grant table: `grant_count` × (`u16` scope count, `u16` resource count; versions 2 and 3 add `u8` state, `u8` limit count, `u16` zero) | 4·G (v1), 8·G (v2, v3) |
//! | grant items (`u32`): each grant's scope string indices, then its resource string indices, then (v2, v3) per rate limit its name's string index, limit, window in seconds and pool, and (v3) its pool's scope string index (`u32::MAX` for a pool without one) | 4·I |
//! | entries, sorted by digest: digest 32, key id 16, expiry `u32` (0 = none), owner string `u32`, grant `u32` | 60·E |
//! | removals (deltas only), sorted: 32-byte digests | 32·R |
//! | CRC32 (IEEE) of every byte before it | 4 |
//!
//! Owners, scopes and resources are interned in the string table; each distinct pair of
//! (scope list, resource list, [`Policy`](crate::policy::Policy)) is stored once as a *grant*. A
//! million keys take about 60 MB. A message whose every grant has the default policy (active, no
//! rate limits) is written as version 1, byte for byte what readers before policies read; one
//! with policies but no scoped owner pool ([`LimitPool::OwnerIn`](crate::policy::LimitPool)) as
//! version 2, byte for byte what readers before scoped pools read; any other as version 3. A
//! reader refuses a version newer than its own (`unsupported_version`), loudly and whole, never
//! reading a scoped pool as an unscoped one: upgrade the filters before the control plane.
//!
//! [`decode`](fn@decode) never panics and never allocates more than the input justifies: the
//! declared counts must add up to exactly the input length before anything is allocated, then
//! the CRC is checked, then every table, index, order and value. [`Snapshot::encode`] and
//! [`Delta::encode`] sort their entries, so any list of distinct digests encodes, and the same
//! content always encodes to the same bytes.
//!
//! The parts: `compat.rs` (what a reader of version 1 gets, and how a reader says it reads
//! version 2: [`ACCEPT_V2`]), `message.rs` (the values a message holds), `error.rs` (why bytes do not decode or
//! a message does not encode), `header.rs` (the fixed header and [`peek_header`]), `decode.rs`
//! (checking every byte, and [`decode`](fn@decode)), `encode.rs` (the string and grant tables,
//! writing a message, [`Snapshot::encode`] and [`Delta::encode`]).

mod compat;
mod decode;
mod encode;
mod error;
mod header;
mod message;

pub use compat::{ACCEPT_V2, ACCEPT_V3, accepted_version, accepts_v2, accepts_v3};
pub use decode::decode;
pub use error::{DecodeError, EncodeError};
pub use header::{Header, peek_header};
pub use message::{Delta, KeyEntry, Message, MessageKind, Snapshot};

pub(crate) use decode::{RawEntry, Validated};
pub(crate) use encode::{Tables, write_message};

use crate::scope;

/// The media type of an encoded message.
pub const CONTENT_TYPE: &str = "application/vnd.keygate.keyset";
/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"KGKS";
/// The newest format version (scoped owner pools): this crate reads it, [`VERSION_2`] and
/// [`VERSION_1`], and writes the oldest that holds a message.
pub const VERSION: u16 = 3;
/// The second format version (policies; owner pools without a scope).
pub const VERSION_2: u16 = 2;
/// The first format version (no policies).
pub const VERSION_1: u16 = 1;
/// The scope item of a rate limit whose pool has no scope (version 3).
pub const NO_SCOPE: u32 = u32::MAX;
/// The size of the fixed header.
pub const HEADER_LEN: usize = 48;
/// The size of one entry.
pub const ENTRY_LEN: usize = 60;
/// The size of one removal.
pub const REMOVAL_LEN: usize = 32;
/// The size of the CRC32 trailer.
pub const TRAILER_LEN: usize = 4;
/// The longest string the string table may hold (the longest resource), in bytes.
pub const MAX_STRING_LEN: usize = scope::MAX_RESOURCE_LEN;
