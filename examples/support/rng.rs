//! The deterministic generator the churn examples share (`#[path]`-included
//! by `fragmentation` and `policy_cost`).

/// splitmix64: a small deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Log-uniform in 16..=65536.
    pub fn size(&mut self) -> usize {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (16f64 * 4096f64.powf(unit)) as usize
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
