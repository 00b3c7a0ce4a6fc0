//! A small seeded generator (xorshift64*) for tests whose random choices must be replayable:
//! a test prints its seed, and the same seed gives the same numbers.

/// xorshift64*: not for cryptography, only for choosing test inputs and timings.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (made odd: the state may not be 0).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The seed in the environment variable `var` when it is set and a number (to replay a
    /// run), else one from the clock.
    pub fn seed_from_env(var: &str) -> u64 {
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` bytes drawn from `alphabet`.
    pub fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }

    /// `min + below(extra)` bytes drawn from `alphabet`.
    pub fn some(&mut self, min: usize, extra: usize, alphabet: &[u8]) -> Vec<u8> {
        let n = min + self.below(extra);
        self.bytes(n, alphabet)
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let mut a = Rng::new(0x5eed_6a7e);
        let mut b = Rng::new(0x5eed_6a7e);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        // The sequence the seeded tests replay (`KEYGATE_BAD_INPUT_SEED` and friends) is fixed.
        let mut c = Rng::new(1);
        assert_eq!(c.next_u64(), 0x47e4_ce4b_896c_dd1d);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
        }
        let b = r.some(2, 5, b"xy");
        assert!((2..7).contains(&b.len()) && b.iter().all(|c| b"xy".contains(c)));
        assert!([1, 2, 3].contains(r.pick(&[1, 2, 3])));
    }
}
