//! A cheap deterministic byte generator for test data of any size.

/// A cheap deterministic byte generator (xorshift64*), incompressible enough that gzip at level
/// 0 or 1 keeps the size.
pub struct Prng(u64);

impl Prng {
    /// Seeded from a string.
    pub fn new(seed: &str) -> Prng {
        let mut h = 0xcbf29ce484222325u64;
        for b in seed.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        Prng(h | 1)
    }
    /// Fill a buffer.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
