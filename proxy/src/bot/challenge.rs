//! Stateless proof-of-work challenges and the "challenge passed" token.
//!
//! A **challenge** is a signed struct, base64url-encoded (integers big-endian):
//!
//! ```text
//! version:u8 (=1) | kind:u8 (=1) | room_len:u8 | room | difficulty:u8 | issued_at:u64 ms
//!   | expires_at:u64 ms | binding:u64 | nonce:[u8; 16] | tag: HMAC-SHA256(key, all above)
//! ```
//!
//! A **solution** is a counter `c` (u64) such that `SHA-256(challenge_ascii || c as 8 bytes
//! big-endian)` starts with `difficulty` zero bits. The browser needs `2^difficulty` hashes on
//! average; the proxy checks a solution with one HMAC and one SHA-256, whatever the difficulty.
//! The nonce is the challenge id: a solved challenge is redeemed once
//! ([`super::replay::ReplayGuard`]).
//!
//! A **pass** (`fg_c_<room>` cookie) says "this client solved a challenge for this room":
//!
//! ```text
//! version:u8 (=1) | kind:u8 (=2) | room_len:u8 | room | difficulty:u8 | issued_at:u64 ms
//!   | expires_at:u64 ms | binding:u64 | tag
//! ```
//!
//! Both are bound to the client per [`PassBinding`](super::PassBinding) (its /24 or /64 by
//! default), so a solution or pass carried to another network does not verify. Decoding
//! arbitrary input never panics; tags are compared in constant time (`ring::hmac::verify`).
//! The key is derived from the config's active signing key: rotating keys invalidates
//! outstanding challenges and passes, which costs shoppers one more solve, nothing else.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::{digest, hmac};
use waitroom::UnixMillis;

const VERSION: u8 = 1;
const KIND_CHALLENGE: u8 = 1;
const KIND_PASS: u8 = 2;
const TAG_LEN: usize = 32;
/// Longest room id a token carries (longer ids are refused at issue; config allows 32).
pub const MAX_ROOM_LEN: usize = 64;
/// Longest encoded challenge or pass accepted; longer input is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 256;
/// Tolerated clock difference between nodes for "issued in the future".
const SKEW_MS: u64 = 5_000;

/// A challenge's id (its nonce).
pub type ChallengeId = [u8; 16];

/// Why a solution or a pass was refused (also the `result` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("malformed challenge or solution")]
    Malformed,
    #[error("challenge signature does not verify")]
    Forged,
    #[error("challenge belongs to another room")]
    WrongRoom,
    #[error("challenge was issued to another client")]
    WrongClient,
    #[error("challenge has expired")]
    Expired,
    #[error("the counter does not solve the challenge")]
    InsufficientWork,
    #[error("challenge was already redeemed")]
    Replayed,
    #[error("too many solved challenges to remember; try again shortly")]
    ReplayCacheFull,
    #[error("the replay store failed")]
    ReplayStoreError,
    #[error("too many requests from this address")]
    Limited,
}

impl ChallengeError {
    pub const ALL: [ChallengeError; 10] = [
        ChallengeError::Malformed,
        ChallengeError::Forged,
        ChallengeError::WrongRoom,
        ChallengeError::WrongClient,
        ChallengeError::Expired,
        ChallengeError::InsufficientWork,
        ChallengeError::Replayed,
        ChallengeError::ReplayCacheFull,
        ChallengeError::ReplayStoreError,
        ChallengeError::Limited,
    ];

    /// Metric label and the `error` field of the JSON answer.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Forged => "forged",
            Self::WrongRoom => "wrong_room",
            Self::WrongClient => "wrong_client",
            Self::Expired => "expired",
            Self::InsufficientWork => "insufficient_work",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::ReplayStoreError => "replay_store_error",
            Self::Limited => "limited",
        }
    }

    /// The HTTP status for the answer to `POST /.flashgate/challenge`.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::Forged | Self::WrongRoom | Self::WrongClient | Self::InsufficientWork => 403,
            // The page fetches a fresh challenge and tries again.
            Self::Expired | Self::Replayed => 409,
            Self::Limited => 429,
            Self::ReplayCacheFull | Self::ReplayStoreError => 503,
        }
    }

    /// Whether the page should get a new challenge and solve again.
    pub const fn retry_with_new_challenge(self) -> bool {
        match self {
            Self::Expired
            | Self::Replayed
            | Self::WrongClient
            | Self::WrongRoom
            | Self::Forged
            | Self::InsufficientWork
            | Self::Malformed => true,
            Self::ReplayCacheFull | Self::ReplayStoreError | Self::Limited => false,
        }
    }
}

/// An issued challenge, ready for the page or a JSON client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub room: String,
    /// The encoded challenge (base64url; ASCII): what is hashed and posted back.
    pub token: String,
    pub difficulty: u8,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
}

impl Challenge {
    /// The JSON a client without the page gets (`Accept: application/json`).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "challenge": self.token,
            "room": self.room,
            "difficulty": self.difficulty,
            "expires_at_ms": self.expires_at.0,
            "algorithm": "sha256(challenge || counter_u64_be) has `difficulty` leading zero bits",
            "submit": "/.flashgate/challenge",
        })
        .to_string()
    }
}

/// A verified solution, not yet redeemed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    pub id: ChallengeId,
    pub room: String,
    pub difficulty: u8,
    pub expires_at: UnixMillis,
    pub binding: u64,
}

/// A verified "challenge passed" token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassInfo {
    pub difficulty: u8,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Signs and verifies challenges and passes.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl fmt::Debug for Signer {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// The fields both token kinds share.
struct Body<'a> {
    room: &'a str,
    difficulty: u8,
    issued_at: u64,
    expires_at: u64,
    binding: u64,
}

impl Signer {
    /// A signer whose key is derived from `secret` (32 bytes from the config's key ring).
    pub fn new(secret: &[u8; 32]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&root, b"flashgate bot challenge key v1");
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    fn seal(&self, kind: u8, b: &Body<'_>, nonce: Option<&ChallengeId>) -> String {
        let room = &b.room.as_bytes()[..b.room.len().min(MAX_ROOM_LEN)];
        let mut buf = Vec::with_capacity(3 + room.len() + 25 + 16 + TAG_LEN);
        buf.extend_from_slice(&[VERSION, kind, room.len() as u8]);
        buf.extend_from_slice(room);
        buf.push(b.difficulty);
        buf.extend_from_slice(&b.issued_at.to_be_bytes());
        buf.extend_from_slice(&b.expires_at.to_be_bytes());
        buf.extend_from_slice(&b.binding.to_be_bytes());
        if let Some(n) = nonce {
            buf.extend_from_slice(n);
        }
        let tag = hmac::sign(&self.key, &buf);
        buf.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Decodes and authenticates; returns the body without the tag.
    fn open(&self, token: &str, kind: u8) -> Result<Vec<u8>, ChallengeError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(ChallengeError::Malformed);
        }
        let mut bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| ChallengeError::Malformed)?;
        if bytes.len() < 3 + TAG_LEN || bytes[0] != VERSION || bytes[1] != kind {
            return Err(ChallengeError::Malformed);
        }
        let body_len = bytes.len() - TAG_LEN;
        hmac::verify(&self.key, &bytes[..body_len], &bytes[body_len..])
            .map_err(|_| ChallengeError::Forged)?;
        bytes.truncate(body_len);
        Ok(bytes)
    }

    /// Issues a challenge.
    pub fn challenge(
        &self,
        room: &str,
        difficulty: u8,
        binding: u64,
        now: UnixMillis,
        ttl: std::time::Duration,
        nonce: ChallengeId,
    ) -> Challenge {
        let expires_at = now.plus(ttl);
        let token = self.seal(
            KIND_CHALLENGE,
            &Body {
                room,
                difficulty,
                issued_at: now.0,
                expires_at: expires_at.0,
                binding,
            },
            Some(&nonce),
        );
        Challenge {
            room: room.to_owned(),
            token,
            difficulty,
            issued_at: now,
            expires_at,
        }
    }

    /// Checks a solution: the challenge's tag, room, expiry and client binding, then the
    /// work. One HMAC and one SHA-256; no state is read or written.
    pub fn verify_solution(
        &self,
        room: &str,
        token: &str,
        counter: u64,
        binding: u64,
        now: UnixMillis,
    ) -> Result<Solved, ChallengeError> {
        let body = self.open(token, KIND_CHALLENGE)?;
        let mut r = Reader(&body[2..]);
        let b = r.body()?;
        let nonce: ChallengeId = r
            .take(16)?
            .try_into()
            .map_err(|_| ChallengeError::Malformed)?;
        r.finish()?;
        check(&b, room, binding, now)?;
        if !work_done(token.as_bytes(), counter, b.difficulty) {
            return Err(ChallengeError::InsufficientWork);
        }
        Ok(Solved {
            id: nonce,
            room: b.room.to_owned(),
            difficulty: b.difficulty,
            expires_at: UnixMillis(b.expires_at),
            binding: b.binding,
        })
    }

    /// Signs a pass for a redeemed solution.
    pub fn pass(
        &self,
        s: &Solved,
        now: UnixMillis,
        ttl: std::time::Duration,
    ) -> (String, UnixMillis) {
        let expires_at = now.plus(ttl);
        let token = self.seal(
            KIND_PASS,
            &Body {
                room: &s.room,
                difficulty: s.difficulty,
                issued_at: now.0,
                expires_at: expires_at.0,
                binding: s.binding,
            },
            None,
        );
        (token, expires_at)
    }

    /// Verifies a pass for `room` and the client's binding.
    pub fn verify_pass(
        &self,
        room: &str,
        token: &str,
        binding: u64,
        now: UnixMillis,
    ) -> Result<PassInfo, ChallengeError> {
        let body = self.open(token, KIND_PASS)?;
        let mut r = Reader(&body[2..]);
        let b = r.body()?;
        r.finish()?;
        check(&b, room, binding, now)?;
        Ok(PassInfo {
            difficulty: b.difficulty,
            issued_at: UnixMillis(b.issued_at),
            expires_at: UnixMillis(b.expires_at),
        })
    }
}

fn check(b: &Body<'_>, room: &str, binding: u64, now: UnixMillis) -> Result<(), ChallengeError> {
    if b.room != room {
        return Err(ChallengeError::WrongRoom);
    }
    if now.0 > b.expires_at || b.issued_at > now.0.saturating_add(SKEW_MS) {
        return Err(ChallengeError::Expired);
    }
    if b.binding != binding {
        return Err(ChallengeError::WrongClient);
    }
    Ok(())
}

/// Whether `SHA-256(challenge || counter_be)` has `difficulty` leading zero bits.
pub fn work_done(challenge: &[u8], counter: u64, difficulty: u8) -> bool {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(challenge);
    ctx.update(&counter.to_be_bytes());
    leading_zero_bits(ctx.finish().as_ref()) >= u32::from(difficulty)
}

fn leading_zero_bits(h: &[u8]) -> u32 {
    let mut n = 0;
    for b in h {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// Finds a solution by brute force (tests, benches, `flashgate` tooling). Expect
/// `2^difficulty` hashes.
pub fn solve(challenge: &str, difficulty: u8) -> u64 {
    (0..u64::MAX)
        .find(|c| work_done(challenge.as_bytes(), *c, difficulty))
        .unwrap_or(u64::MAX)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ChallengeError> {
        if self.0.len() < n {
            return Err(ChallengeError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, ChallengeError> {
        let b: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| ChallengeError::Malformed)?;
        Ok(u64::from_be_bytes(b))
    }

    fn body(&mut self) -> Result<Body<'a>, ChallengeError> {
        let len = usize::from(self.take(1)?[0]);
        let room = std::str::from_utf8(self.take(len)?).map_err(|_| ChallengeError::Malformed)?;
        Ok(Body {
            room,
            difficulty: self.take(1)?[0],
            issued_at: self.u64()?,
            expires_at: self.u64()?,
            binding: self.u64()?,
        })
    }

    fn finish(&self) -> Result<(), ChallengeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ChallengeError::Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);
    const TTL: Duration = Duration::from_secs(120);

    fn signer() -> Signer {
        Signer::new(&[7; 32])
    }

    #[test]
    fn a_solution_verifies_once_for_its_room_client_and_time() {
        let s = signer();
        let c = s.challenge("drop", 8, 42, T0, TTL, [1; 16]);
        let counter = solve(&c.token, 8);
        let ok = s
            .verify_solution(
                "drop",
                &c.token,
                counter,
                42,
                T0.plus(Duration::from_secs(3)),
            )
            .expect("solves");
        assert_eq!(ok.id, [1; 16]);
        assert_eq!(ok.difficulty, 8);
        assert_eq!(ok.expires_at, T0.plus(TTL));

        let at = T0.plus(Duration::from_secs(1));
        assert_eq!(
            s.verify_solution("other", &c.token, counter, 42, at),
            Err(ChallengeError::WrongRoom)
        );
        assert_eq!(
            s.verify_solution("drop", &c.token, counter, 43, at),
            Err(ChallengeError::WrongClient)
        );
        assert_eq!(
            s.verify_solution(
                "drop",
                &c.token,
                counter,
                42,
                T0.plus(TTL).plus(Duration::from_millis(1))
            ),
            Err(ChallengeError::Expired)
        );
        // Dated a minute in the future (a skewed or forged clock).
        assert_eq!(
            s.verify_solution(
                "drop",
                &c.token,
                counter,
                42,
                T0.minus(Duration::from_secs(60))
            ),
            Err(ChallengeError::Expired)
        );
    }

    #[test]
    fn a_wrong_counter_is_refused() {
        let s = signer();
        let c = s.challenge("drop", 12, 0, T0, TTL, [2; 16]);
        let good = solve(&c.token, 12);
        let wrong = (0..good)
            .rev()
            .find(|n| !work_done(c.token.as_bytes(), *n, 12))
            .expect("some smaller counter fails");
        assert_eq!(
            s.verify_solution("drop", &c.token, wrong, 0, T0),
            Err(ChallengeError::InsufficientWork)
        );
    }

    #[test]
    fn forged_tampered_and_garbage_tokens_are_refused() {
        let s = signer();
        let c = s.challenge("drop", 4, 0, T0, TTL, [3; 16]);
        let n = solve(&c.token, 4);
        // Another key.
        let other = Signer::new(&[8; 32]);
        assert_eq!(
            other.verify_solution("drop", &c.token, n, 0, T0),
            Err(ChallengeError::Forged)
        );
        // Lower the difficulty in the body: the tag no longer matches.
        let mut raw = URL_SAFE_NO_PAD.decode(&c.token).expect("b64");
        raw[3 + 4] = 0;
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            s.verify_solution("drop", &forged, 0, 0, T0),
            Err(ChallengeError::Forged)
        );
        for junk in [
            "",
            "!!!",
            "AAAA",
            &"A".repeat(300),
            &c.token[..c.token.len() - 2],
        ] {
            assert!(s.verify_solution("drop", junk, 0, 0, T0).is_err(), "{junk}");
        }
        // A pass is not a challenge and vice versa.
        let solved = s.verify_solution("drop", &c.token, n, 0, T0).expect("ok");
        let (pass, _) = s.pass(&solved, T0, TTL);
        assert_eq!(
            s.verify_solution("drop", &pass, n, 0, T0),
            Err(ChallengeError::Malformed)
        );
        assert_eq!(
            s.verify_pass("drop", &c.token, 0, T0),
            Err(ChallengeError::Malformed)
        );
    }

    #[test]
    fn passes_verify_until_expiry_for_their_room_and_client() {
        let s = signer();
        let c = s.challenge("drop", 4, 9, T0, TTL, [4; 16]);
        let solved = s
            .verify_solution("drop", &c.token, solve(&c.token, 4), 9, T0)
            .expect("ok");
        let ttl = Duration::from_secs(1800);
        let (pass, exp) = s.pass(&solved, T0, ttl);
        assert_eq!(exp, T0.plus(ttl));
        let info = s
            .verify_pass("drop", &pass, 9, T0.plus(ttl))
            .expect("valid");
        assert_eq!(info.difficulty, 4);
        assert_eq!(
            s.verify_pass(
                "drop",
                &pass,
                9,
                T0.plus(ttl).plus(Duration::from_millis(1))
            ),
            Err(ChallengeError::Expired)
        );
        assert_eq!(
            s.verify_pass("other", &pass, 9, T0),
            Err(ChallengeError::WrongRoom)
        );
        assert_eq!(
            s.verify_pass("drop", &pass, 8, T0),
            Err(ChallengeError::WrongClient)
        );
        assert!(pass.len() <= MAX_TOKEN_LEN && c.token.len() <= MAX_TOKEN_LEN);
    }

    #[test]
    fn leading_zeros() {
        assert_eq!(leading_zero_bits(&[0, 0, 0x0f]), 20);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
        // Difficulty 0 is always met.
        assert!(work_done(b"x", 0, 0));
    }

    #[test]
    fn error_labels_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for e in ChallengeError::ALL {
            assert!(seen.insert(e.as_str()));
            assert!(e.http_status() >= 400);
        }
    }
}
