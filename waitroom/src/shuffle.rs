//! The auditable shuffle: a keyed permutation of ticket numbers.
//!
//! When a sale starts, everyone who joined the pre-queue is put in a random order that nobody —
//! not even the operator — can choose after the fact: the seed is derived from the room's secret
//! and the event name, its SHA-256 is published on the waiting page from the moment the
//! pre-queue opens, and the seed itself is revealed at the start. Anyone can then recompute the
//! whole order with [`order`] (or one place with [`Permutation::position`]) and check the hash.
//!
//! The same permutation orders the draws of `random` rooms (a lottery among everyone waiting at
//! the moment of a draw).
//!
//! Algorithm (stable; changing it would change published orders):
//! - `count` items with 0-based indexes `0..count`. Let `b` be the smallest even number of bits
//!   with `2^b >= count` (at least 2); split a `b`-bit value into halves `L`, `R` of `b/2` bits.
//! - Six Feistel rounds: `L, R = R, L xor F(round, R)`, where `F` is the first 8 bytes (big
//!   endian) of `HMAC-SHA256(seed, "fg-shuffle-v1" || round:u8 || R:u64be)` masked to `b/2` bits.
//! - Cycle walking: if the result is `>= count`, apply the rounds again to the result.
//! - `position(index)` is the final value: the 0-based place of item `index` in the new order.

use ring::{digest, hmac};

const DOMAIN: &[u8] = b"fg-shuffle-v1";
const ROUNDS: u8 = 6;

/// A permutation of `0..count` keyed by a 32-byte seed.
#[derive(Clone)]
pub struct Permutation {
    key: hmac::Key,
    count: u64,
    half_bits: u32,
}

impl std::fmt::Debug for Permutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permutation")
            .field("count", &self.count)
            .finish()
    }
}

impl Permutation {
    /// A permutation of `0..count`.
    pub fn new(seed: &[u8; 32], count: u64) -> Self {
        let mut bits = 2u32;
        while bits < 64 && (1u64 << bits) < count {
            bits += 2;
        }
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, seed),
            count,
            half_bits: bits / 2,
        }
    }

    /// How many items are permuted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The 0-based place of item `index` in the shuffled order. `index` must be `< count`;
    /// larger values are returned unchanged.
    pub fn position(&self, index: u64) -> u64 {
        if index >= self.count {
            return index;
        }
        let mut x = index;
        // Cycle walking terminates: the Feistel network is a bijection on the 2^b domain, so
        // following it from an in-range value returns to the range; expected < 4 steps.
        loop {
            x = self.feistel(x);
            if x < self.count {
                return x;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let h = self.half_bits;
        let mask = if h >= 64 { u64::MAX } else { (1u64 << h) - 1 };
        let mut l = (x >> h) & mask;
        let mut r = x & mask;
        for round in 0..ROUNDS {
            let mut ctx = hmac::Context::with_key(&self.key);
            ctx.update(DOMAIN);
            ctx.update(&[round]);
            ctx.update(&r.to_be_bytes());
            let tag = ctx.sign();
            let mut b = [0u8; 8];
            b.copy_from_slice(&tag.as_ref()[..8]);
            let f = u64::from_be_bytes(b) & mask;
            let next = l ^ f;
            l = r;
            r = next;
        }
        (l << h) | r
    }
}

/// The whole shuffled order: `order(seed, n)[k]` is the 0-based index of the item placed k-th.
///
/// This is the public audit function: with the revealed seed and the pre-queue size shown on
/// the waiting page, anyone can check where each ticket was placed.
pub fn order(seed: &[u8; 32], count: u64) -> Vec<u64> {
    let p = Permutation::new(seed, count);
    let mut out = vec![0u64; count as usize];
    for i in 0..count {
        out[p.position(i) as usize] = i;
    }
    out
}

/// SHA-256 of the seed: the commitment published before the seed is revealed.
pub fn seed_hash(seed: &[u8; 32]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, seed);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses 64 hex digits into a seed.
pub fn parse_seed(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_permutation_for_many_sizes() {
        let seed = [3u8; 32];
        for n in [0u64, 1, 2, 3, 4, 5, 15, 16, 17, 100, 1000, 4097] {
            let mut o = order(&seed, n);
            o.sort_unstable();
            assert_eq!(o, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn seed_changes_order_and_order_inverts_position() {
        let a = order(&[1u8; 32], 500);
        let b = order(&[2u8; 32], 500);
        assert_ne!(a, b);
        let p = Permutation::new(&[1u8; 32], 500);
        for (k, idx) in a.iter().enumerate() {
            assert_eq!(p.position(*idx), k as u64);
        }
        // Not the identity: a shuffle that moved nobody would be a bug.
        assert!(
            a.iter()
                .enumerate()
                .filter(|(k, v)| *k as u64 == **v)
                .count()
                < 20
        );
    }

    #[test]
    fn hex_round_trip() {
        let seed = [0xab; 32];
        assert_eq!(parse_seed(&hex(&seed)), Some(seed));
        assert_eq!(parse_seed("zz"), None);
        assert_eq!(hex(&seed_hash(&[0u8; 32])).len(), 64);
    }
}
