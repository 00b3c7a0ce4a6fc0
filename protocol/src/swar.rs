//! Eight bytes at a time in one `u64` (SWAR): the byte tests the key parse, the key-set lookup
//! and the filter's path check share, cheaper in wasm than a loop over bytes.

/// `0x01` in every byte.
pub const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// The high bit of every byte.
pub const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);

/// The high bit of every byte of `w` that equals `b`, and no other bit. Exact per byte: no carry
/// or borrow crosses from one byte to the next, so a match never marks its neighbour.
#[must_use]
pub const fn bytes_equal(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * b as u64);
    // A byte's high bit survives only when the byte of `x` is zero.
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_equal_marks_exactly_the_equal_bytes() {
        let w = u64::from_le_bytes(*b"a/\x00\xff/./\x80");
        let bits = |bytes: &[u32]| bytes.iter().map(|i| 1_u64 << (8 * i + 7)).sum::<u64>();
        assert_eq!(bytes_equal(w, b'/'), bits(&[1, 4, 6]));
        assert_eq!(bytes_equal(w, 0), bits(&[2]));
        assert_eq!(bytes_equal(w, 0xff), bits(&[3]));
        assert_eq!(bytes_equal(w, 0x80), bits(&[7]));
        assert_eq!(bytes_equal(w, b'.'), bits(&[5]));
        assert_eq!(bytes_equal(w, b'b'), 0);
        for b in 0..=255 {
            assert_eq!(
                bytes_equal(u64::from_le_bytes([b; 8]), b),
                bits(&[0, 1, 2, 3, 4, 5, 6, 7])
            );
            assert_eq!(bytes_equal(u64::from_le_bytes([b; 8]), b ^ 1), 0);
        }
    }
}
