//! The usage report contract (`POST /v1/usage`): how large a batch may be, so that what the
//! filter sends always fits what the control plane accepts.
//!
//! An entry is `{"key_id":"key_<32 hex>","count":N,"last_used_at":T}`, with `"limited":M` (requests
//! refused by a rate limit) when M is not 0 and `"credits_exhausted":E` (requests refused because
//! the key's credits were used up; the control plane takes it, the filters do not send it yet)
//! when E is not 0 (counts up to 10⁹, times in unix seconds): at most [`MAX_ENTRY_BYTES`] of JSON. The control plane accepts
//! [`MAX_BATCH_ENTRIES`] entries per batch and a body of [`MAX_BODY_BYTES`] on this route,
//! whatever its general body limit; the filter never sends more.

/// Most entries in one batch.
pub const MAX_BATCH_ENTRIES: usize = 2_000;

/// The largest JSON of one entry, comma included (its fields at their largest accepted values).
pub const MAX_ENTRY_BYTES: usize = 148;

/// The body limit of `POST /v1/usage`: a full batch at the largest entries, with room for the
/// batch id (at most 128 bytes) and the envelope.
pub const MAX_BODY_BYTES: usize = MAX_BATCH_ENTRIES * MAX_ENTRY_BYTES + 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_entry_fits_its_bound() {
        let entry = format!(
            r#"{{"key_id":"key_{}","count":{},"last_used_at":{},"limited":{},"credits_exhausted":{}}},"#,
            "f".repeat(32),
            1_000_000_000u64,
            // the control plane refuses times more than 300 s ahead: ten digits until 2286
            9_999_999_999u64,
            1_000_000_000u64,
            1_000_000_000u64
        );
        assert!(entry.len() <= MAX_ENTRY_BYTES, "{} bytes", entry.len());
    }
}
