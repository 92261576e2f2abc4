//! Signed, self-verifying queue tokens.
//!
//! Two kinds: a **ticket** (a place in line) and a **pass** (an admitted session). Both are
//! compact versioned binary structs, HMAC-SHA256-signed, base64url-encoded, so the proxy keeps no
//! per-shopper state and a node can verify a pass with no store round trip.
//!
//! Wire format (all integers big-endian):
//!
//! ```text
//! version:u8 (=1) | kind:u8 (1 ticket, 2 pass) | key_id:u8 | room_len:u8 | room bytes
//! ticket: event:u32 | number:u64 | issued_at:u64 s | last_seen:u64 s | expires_at:u64 s | binding:u64
//!         | serving_at_issue:u64
//! pass:   event:u32 | ticket:u64 | admitted_at:u64 s | checkin_minute:u32 | expires_at:u64 s
//!         | binding:u64 | flags:u8
//! tag: HMAC-SHA256(key[key_id], everything above), 32 bytes
//! ```
//!
//! Guarantees (each backed by a test in this module or `tests/props.rs`):
//! - decoding arbitrary bytes or strings never panics;
//! - any flipped bit, truncation, extension, other key, other room or other kind fails;
//! - a token verifies up to `expires_at + leeway` and never after; a token claiming to come from
//!   further in the future than the leeway is refused (skewed or forged clocks);
//! - verification compares tags in constant time (`ring::hmac::verify`);
//! - key rotation: tokens are signed with the active key id and verify with any key in the ring.
//!
//! A bad token is never an error for the shopper: the gate treats it as "no token" and queues.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

use crate::time::UnixMillis;

const VERSION: u8 = 1;
const KIND_TICKET: u8 = 1;
const KIND_PASS: u8 = 2;
const TAG_LEN: usize = 32;
/// Longest room id a token can carry.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest encoded token accepted; longer input is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 512;

/// Identifies one key in a [`KeyRing`]; carried in every token.
pub type KeyId = u8;

/// Why a token was refused. The gate maps every variant to "no token".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not valid base64url or is too long")]
    Encoding,
    #[error("token is truncated or has trailing bytes")]
    Malformed,
    #[error("unsupported token version {0}")]
    Version(u8),
    #[error("token is of another kind")]
    WrongKind,
    #[error("token was signed with unknown key id {0}")]
    UnknownKey(KeyId),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token belongs to another room")]
    WrongRoom,
    #[error("token is bound to another client")]
    WrongClient,
    #[error("token has expired")]
    Expired,
    #[error("token is dated in the future")]
    FromTheFuture,
}

/// A configuration error for the key ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key ring is empty")]
    Empty,
    #[error("key {0} is shorter than 32 bytes")]
    TooShort(KeyId),
    #[error("key id {0} appears twice")]
    Duplicate(KeyId),
    #[error("active key id {0} is not in the ring")]
    NoActive(KeyId),
}

/// HMAC keys by id: sign with the active one, verify with any.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(KeyId, hmac::Key)>,
    active: usize,
    /// Passes this ring has authenticated, by token text (shared by the ring's clones).
    verified: Arc<quick_cache::sync::Cache<String, Pass>>,
}

/// How many authenticated passes a [`KeyRing`] remembers (about 300 bytes each).
///
/// An admitted shopper sends the same pass with every request until it is renewed (once a
/// minute at most), and authenticating it again — base64, HMAC-SHA256, parsing — was ~6,600
/// of the ~114,000 instructions a forwarded request cost a node (`loadtests/pass-callgrind.sh`,
/// 2026-12-08). A hit compares the token text and clones the claims instead; room, client
/// binding and expiry are still checked on every request. Only authenticated tokens are
/// stored, so a forger cannot fill it, and a new ring (a reload, a key rotation) starts empty,
/// so a removed key's passes are not honoured from memory. Beyond this many concurrent
/// passes the misses cost what every request cost before.
const VERIFIED_PASSES: usize = 32_768;

impl fmt::Debug for KeyRing {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<KeyId> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("KeyRing")
            .field("ids", &ids)
            .field("active", &self.keys[self.active].0)
            .finish()
    }
}

impl KeyRing {
    /// Builds a ring from `(id, secret)` pairs. Secrets must have at least 32 bytes.
    pub fn new(keys: &[(KeyId, &[u8])], active: KeyId) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut out: Vec<(KeyId, hmac::Key)> = Vec::with_capacity(keys.len());
        for (id, secret) in keys {
            if secret.len() < 32 {
                return Err(KeyError::TooShort(*id));
            }
            if out.iter().any(|(k, _)| k == id) {
                return Err(KeyError::Duplicate(*id));
            }
            out.push((*id, hmac::Key::new(hmac::HMAC_SHA256, secret)));
        }
        let active = out
            .iter()
            .position(|(id, _)| *id == active)
            .ok_or(KeyError::NoActive(active))?;
        Ok(Self {
            keys: out,
            active,
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_PASSES)),
        })
    }

    /// The key id new tokens are signed with.
    pub fn active_id(&self) -> KeyId {
        self.keys[self.active].0
    }

    fn key(&self, id: KeyId) -> Option<&hmac::Key> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }

    /// Derives a 32-byte secret for `purpose` from the active key (e.g. shuffle seeds).
    pub fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.keys[self.active].1, purpose);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Derives a 32-byte secret for `purpose` from the key with the lowest id — stable across
    /// a rotation that adds a key and makes it active, as long as the old key stays listed.
    /// The shuffle seeds use it, so that a seed hash published during a pre-queue still
    /// matches the seed revealed at the start.
    pub fn derive_stable(&self, purpose: &[u8]) -> [u8; 32] {
        let (_, key) = self
            .keys
            .iter()
            .min_by_key(|(id, _)| *id)
            .unwrap_or(&self.keys[self.active]);
        let tag = hmac::sign(key, purpose);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Signs a ticket.
    pub fn sign_ticket(&self, t: &Ticket) -> String {
        let mut buf = self.header(KIND_TICKET, &t.room);
        buf.extend_from_slice(&t.event.to_be_bytes());
        buf.extend_from_slice(&t.number.to_be_bytes());
        buf.extend_from_slice(&t.issued_at.to_be_bytes());
        buf.extend_from_slice(&t.last_seen.to_be_bytes());
        buf.extend_from_slice(&t.expires_at.to_be_bytes());
        buf.extend_from_slice(&t.binding.to_be_bytes());
        buf.extend_from_slice(&t.serving_at_issue.to_be_bytes());
        self.seal(buf)
    }

    /// Signs a pass.
    pub fn sign_pass(&self, p: &Pass) -> String {
        let mut buf = self.header(KIND_PASS, &p.room);
        buf.extend_from_slice(&p.event.to_be_bytes());
        buf.extend_from_slice(&p.ticket.to_be_bytes());
        buf.extend_from_slice(&p.admitted_at.to_be_bytes());
        buf.extend_from_slice(&p.checkin_minute.to_be_bytes());
        buf.extend_from_slice(&p.expires_at.to_be_bytes());
        buf.extend_from_slice(&p.binding.to_be_bytes());
        buf.push(u8::from(p.fixed_session));
        self.seal(buf)
    }

    fn header(&self, kind: u8, room: &str) -> Vec<u8> {
        let room = &room.as_bytes()[..room.len().min(MAX_ROOM_LEN)];
        let mut buf = Vec::with_capacity(96);
        buf.extend_from_slice(&[VERSION, kind, self.active_id(), room.len() as u8]);
        buf.extend_from_slice(room);
        buf
    }

    fn seal(&self, mut buf: Vec<u8>) -> String {
        let tag = hmac::sign(&self.keys[self.active].1, &buf);
        buf.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Decodes and authenticates a token of `kind`, returning the signed body (without tag).
    /// Decoded into a buffer on the stack: a pass is verified on every request of an admitted
    /// shopper, and this keeps the allocator out of it (one allocation fewer per request).
    fn open(&self, token: &str, kind: u8) -> Result<Opened, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Encoding);
        }
        let mut buf = [0u8; MAX_DECODED_LEN];
        let len = URL_SAFE_NO_PAD
            .decode_slice(token.as_bytes(), &mut buf)
            .map_err(|_| TokenError::Encoding)?;
        let bytes = &buf[..len];
        if bytes.len() < 4 + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        if bytes[0] != VERSION {
            return Err(TokenError::Version(bytes[0]));
        }
        if bytes[1] != kind {
            return Err(TokenError::WrongKind);
        }
        let key = self.key(bytes[2]).ok_or(TokenError::UnknownKey(bytes[2]))?;
        let body_len = bytes.len() - TAG_LEN;
        let (body, tag) = bytes.split_at(body_len);
        hmac::verify(key, body, tag).map_err(|_| TokenError::BadSignature)?;
        Ok(Opened { buf, len: body_len })
    }

    /// Verifies a ticket for `expect.room` and the client binding, and checks its expiry.
    pub fn verify_ticket(&self, token: &str, expect: &Expect<'_>) -> Result<Ticket, TokenError> {
        let opened = self.open(token, KIND_TICKET)?;
        let mut r = Reader::new(&opened.body()[3..]);
        let room = r.room()?;
        let t = Ticket {
            room,
            event: r.u32()?,
            number: r.u64()?,
            issued_at: r.u64()?,
            last_seen: r.u64()?,
            expires_at: r.u64()?,
            binding: r.u64()?,
            serving_at_issue: r.u64()?,
        };
        r.finish()?;
        expect.check(&t.room, t.binding, t.last_seen, t.expires_at)?;
        Ok(t)
    }

    /// Verifies a pass for `expect.room` and the client binding, and checks its expiry. A
    /// token this ring authenticated before is not authenticated again (see
    /// [`VERIFIED_PASSES`]).
    pub fn verify_pass(&self, token: &str, expect: &Expect<'_>) -> Result<Pass, TokenError> {
        let p = match self.verified.get(token) {
            Some(p) => p,
            None => {
                let p = self.open_pass(token)?;
                self.verified.insert(token.to_owned(), p.clone());
                p
            }
        };
        expect.check(&p.room, p.binding, p.admitted_at, p.expires_at)?;
        Ok(p)
    }

    /// Authenticates and decodes a pass; checks nothing else.
    fn open_pass(&self, token: &str) -> Result<Pass, TokenError> {
        let opened = self.open(token, KIND_PASS)?;
        let mut r = Reader::new(&opened.body()[3..]);
        let room = r.room()?;
        let p = Pass {
            room,
            event: r.u32()?,
            ticket: r.u64()?,
            admitted_at: r.u64()?,
            checkin_minute: r.u32()?,
            expires_at: r.u64()?,
            binding: r.u64()?,
            fixed_session: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(TokenError::Malformed),
            },
        };
        r.finish()?;
        Ok(p)
    }

    /// Decodes a token of either kind *without* checking room, binding or expiry, but still
    /// authenticating it. For `flashgate token inspect`.
    pub fn inspect(&self, token: &str) -> Result<Inspected, TokenError> {
        let far = Expect {
            room: "",
            binding: Binding::ANY,
            now: UnixMillis(0),
            leeway: Duration::from_secs(u32::MAX as u64),
        };
        match self.verify_ticket(token, &far) {
            Ok(t) => return Ok(Inspected::Ticket(t)),
            Err(TokenError::WrongKind) => {}
            Err(e) => return Err(e),
        }
        self.verify_pass(token, &far).map(Inspected::Pass)
    }
}

/// Longest decoded token [`KeyRing::open`] accepts (base64url without padding: 3 bytes per 4
/// characters).
const MAX_DECODED_LEN: usize = MAX_TOKEN_LEN / 4 * 3 + 3;

/// A token's authenticated body, on the stack.
struct Opened {
    buf: [u8; MAX_DECODED_LEN],
    len: usize,
}

impl Opened {
    fn body(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Result of [`KeyRing::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    Ticket(Ticket),
    Pass(Pass),
}

/// What a token must match to verify.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The room the request is for; an empty string accepts any room (inspection only).
    pub room: &'a str,
    /// The requesting client's binding value ([`Binding::ANY`] to skip the check).
    pub binding: u64,
    pub now: UnixMillis,
    /// Tolerated clock skew between nodes.
    pub leeway: Duration,
}

impl Expect<'_> {
    fn check(
        &self,
        room: &str,
        binding: u64,
        dated: u64,
        expires_at: u64,
    ) -> Result<(), TokenError> {
        if !self.room.is_empty() && room != self.room {
            return Err(TokenError::WrongRoom);
        }
        if binding != Binding::NONE && self.binding != Binding::ANY && binding != self.binding {
            return Err(TokenError::WrongClient);
        }
        let now = self.now.secs();
        let leeway = self.leeway.as_secs();
        if now > expires_at.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if dated > now.saturating_add(leeway) {
            return Err(TokenError::FromTheFuture);
        }
        Ok(())
    }
}

/// A place in line. The number is the shopper's ticket; the position is derived from it and the
/// room's state (see [`crate::shuffle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub room: String,
    /// The sale event the ticket was issued for (0 when none).
    pub event: u32,
    pub number: u64,
    /// Seconds since the epoch.
    pub issued_at: u64,
    /// Last time the shopper polled (seconds); renewed on every poll.
    pub last_seen: u64,
    /// `last_seen + abandon_after`: past this the place is lost.
    pub expires_at: u64,
    /// Client binding (0 = unbound).
    pub binding: u64,
    /// The serving number when the ticket was issued (for the progress bar).
    pub serving_at_issue: u64,
}

/// An admitted session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub room: String,
    pub event: u32,
    /// The ticket that was admitted (each ticket enters at most once).
    pub ticket: u64,
    /// Seconds since the epoch.
    pub admitted_at: u64,
    /// UTC minute of the last check-in: the active-user bucket this shopper is counted in.
    pub checkin_minute: u32,
    /// Seconds since the epoch.
    pub expires_at: u64,
    pub binding: u64,
    /// A fixed session is never renewed.
    pub fixed_session: bool,
}

/// How a token is tied to the client that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Binding {
    /// Not bound: a copied cookie works anywhere.
    #[default]
    None,
    /// Bound to the exact `User-Agent` string.
    UserAgent,
    /// Bound to the client address prefix (`/v4` bits for IPv4, `/v6` bits for IPv6).
    IpPrefix { v4: u8, v6: u8 },
}

impl Binding {
    /// The binding value of an unbound token.
    pub const NONE: u64 = 0;
    /// Accept any binding (inspection only).
    pub const ANY: u64 = u64::MAX;

    /// Computes the binding value for a client. Never returns `NONE` or `ANY` for a bound mode.
    pub fn value(self, user_agent: &[u8], ip: Option<std::net::IpAddr>) -> u64 {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        match self {
            Binding::None => return Self::NONE,
            Binding::UserAgent => {
                ctx.update(b"ua\0");
                ctx.update(user_agent);
            }
            Binding::IpPrefix { v4, v6 } => {
                ctx.update(b"ip\0");
                match ip {
                    Some(std::net::IpAddr::V4(a)) => {
                        let bits = u32::from(a) & mask32(v4);
                        ctx.update(&[4, v4]);
                        ctx.update(&bits.to_be_bytes());
                    }
                    Some(std::net::IpAddr::V6(a)) => {
                        let bits = u128::from(a) & mask128(v6);
                        ctx.update(&[6, v6]);
                        ctx.update(&bits.to_be_bytes());
                    }
                    None => ctx.update(&[0]),
                }
            }
        }
        let d = ctx.finish();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.as_ref()[..8]);
        match u64::from_be_bytes(b) {
            Self::NONE => 1,
            Self::ANY => u64::MAX - 1,
            v => v,
        }
    }
}

fn mask32(bits: u8) -> u32 {
    match bits {
        0 => 0,
        b if b >= 32 => u32::MAX,
        b => u32::MAX << (32 - b),
    }
}

fn mask128(bits: u8) -> u128 {
    match bits {
        0 => 0,
        b if b >= 128 => u128::MAX,
        b => u128::MAX << (128 - b),
    }
}

/// A bounds-checked big-endian reader: every read returns `Malformed` instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.buf.len() < n {
            return Err(TokenError::Malformed);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, TokenError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, TokenError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn room(&mut self) -> Result<String, TokenError> {
        let len = self.u8()? as usize;
        if len > MAX_ROOM_LEN {
            return Err(TokenError::Malformed);
        }
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| TokenError::Malformed)
    }

    fn finish(&self) -> Result<(), TokenError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(TokenError::Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(&[(1, &[7u8; 32]), (2, &[9u8; 32])], 2).expect("valid ring")
    }

    fn ticket() -> Ticket {
        Ticket {
            room: "drop".into(),
            event: 3,
            number: 42,
            issued_at: 1_000,
            last_seen: 1_010,
            expires_at: 1_310,
            binding: 0,
            serving_at_issue: 40,
        }
    }

    /// A pass for room "drop", bound to client 5 (what [`expect`] asks), valid 100..400 s.
    fn pass() -> Pass {
        Pass {
            room: "drop".into(),
            event: 0,
            ticket: 9,
            admitted_at: 100,
            checkin_minute: 1,
            expires_at: 400,
            binding: 5,
            fixed_session: false,
        }
    }

    fn expect(now: u64) -> Expect<'static> {
        Expect {
            room: "drop",
            binding: 5,
            now: UnixMillis::from_secs(now),
            leeway: Duration::from_secs(2),
        }
    }

    #[test]
    fn ticket_round_trip_and_expiry_edge() {
        let r = ring();
        let tok = r.sign_ticket(&ticket());
        assert!(tok.len() < 130, "ticket is compact: {}", tok.len());
        assert_eq!(r.verify_ticket(&tok, &expect(1_312)), Ok(ticket()));
        assert_eq!(
            r.verify_ticket(&tok, &expect(1_313)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            r.verify_ticket(&tok, &expect(1_007)),
            Err(TokenError::FromTheFuture)
        );
    }

    #[test]
    fn pass_round_trip_and_kind_confusion() {
        let r = ring();
        let p = Pass {
            binding: 77,
            fixed_session: true,
            ..pass()
        };
        let tok = r.sign_pass(&p);
        let mut e = expect(200);
        e.binding = 77;
        assert_eq!(r.verify_pass(&tok, &e), Ok(p));
        assert_eq!(r.verify_ticket(&tok, &e), Err(TokenError::WrongKind));
        e.binding = 78;
        assert_eq!(r.verify_pass(&tok, &e), Err(TokenError::WrongClient));
        assert!(matches!(r.inspect(&tok), Ok(Inspected::Pass(_))));
    }

    #[test]
    fn a_remembered_pass_is_still_checked_and_a_new_ring_forgets_it() {
        let r = ring();
        let p = pass();
        let tok = r.sign_pass(&p);
        assert_eq!(r.verify_pass(&tok, &expect(200)), Ok(p.clone()));
        // Remembered now: room, client and expiry are checked all the same.
        let mut other_room = expect(200);
        other_room.room = "checkout";
        assert_eq!(r.verify_pass(&tok, &other_room), Err(TokenError::WrongRoom));
        let mut other_client = expect(200);
        other_client.binding = 6;
        assert_eq!(
            r.verify_pass(&tok, &other_client),
            Err(TokenError::WrongClient)
        );
        assert_eq!(r.verify_pass(&tok, &expect(403)), Err(TokenError::Expired));
        assert_eq!(r.clone().verify_pass(&tok, &expect(300)), Ok(p));
        // A token differing in one character is not the remembered one.
        let mut forged = tok.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(
            r.verify_pass(&forged, &expect(200)),
            Err(TokenError::BadSignature)
        );
        // A ring without the key that signed it (a rotation that dropped key 2) refuses it.
        let rotated = KeyRing::new(&[(1, &[7u8; 32])], 1).expect("valid ring");
        assert_eq!(
            rotated.verify_pass(&tok, &expect(200)),
            Err(TokenError::UnknownKey(2))
        );
    }

    #[test]
    fn rotation_other_room_unknown_key() {
        let old = KeyRing::new(&[(1, &[7u8; 32])], 1).expect("valid ring");
        let tok = old.sign_ticket(&ticket());
        // The new ring still lists key 1: old tokens verify.
        assert!(ring().verify_ticket(&tok, &expect(1_100)).is_ok());
        let other = KeyRing::new(&[(3, &[7u8; 32])], 3).expect("valid ring");
        assert_eq!(
            other.verify_ticket(&tok, &expect(1_100)),
            Err(TokenError::UnknownKey(1))
        );
        let mut e = expect(1_100);
        e.room = "checkout";
        assert_eq!(ring().verify_ticket(&tok, &e), Err(TokenError::WrongRoom));
    }

    #[test]
    fn stable_derivation_survives_an_active_key_switch() {
        let before = KeyRing::new(&[(1, &[7u8; 32])], 1).expect("valid ring");
        let rotated = KeyRing::new(&[(1, &[7u8; 32]), (2, &[9u8; 32])], 2).expect("valid ring");
        assert_eq!(
            before.derive_stable(b"seed"),
            rotated.derive_stable(b"seed")
        );
        assert_ne!(before.derive(b"seed"), rotated.derive(b"seed"));
    }

    #[test]
    fn key_ring_validation() {
        assert_eq!(KeyRing::new(&[], 1).err(), Some(KeyError::Empty));
        assert_eq!(
            KeyRing::new(&[(1, &[0u8; 31])], 1).err(),
            Some(KeyError::TooShort(1))
        );
        assert_eq!(
            KeyRing::new(&[(1, &[0u8; 32]), (1, &[1u8; 32])], 1).err(),
            Some(KeyError::Duplicate(1))
        );
        assert_eq!(
            KeyRing::new(&[(1, &[0u8; 32])], 2).err(),
            Some(KeyError::NoActive(2))
        );
        assert!(
            !format!("{:?}", ring()).contains("7, 7"),
            "debug output leaks no key"
        );
    }

    #[test]
    fn binding_values() {
        let ip4: std::net::IpAddr = "203.0.113.77".parse().expect("ip");
        let ip4b: std::net::IpAddr = "203.0.113.200".parse().expect("ip");
        let b = Binding::IpPrefix { v4: 24, v6: 64 };
        assert_eq!(b.value(b"", Some(ip4)), b.value(b"", Some(ip4b)));
        let b32 = Binding::IpPrefix { v4: 32, v6: 128 };
        assert_ne!(b32.value(b"", Some(ip4)), b32.value(b"", Some(ip4b)));
        assert_ne!(
            Binding::UserAgent.value(b"a", None),
            Binding::UserAgent.value(b"b", None)
        );
        assert_eq!(Binding::None.value(b"a", Some(ip4)), Binding::NONE);
    }

    #[test]
    fn oversized_and_garbage() {
        let r = ring();
        let long = "A".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            r.verify_ticket(&long, &expect(0)),
            Err(TokenError::Encoding)
        );
        assert_eq!(r.verify_ticket("!!", &expect(0)), Err(TokenError::Encoding));
        assert_eq!(r.verify_ticket("", &expect(0)), Err(TokenError::Malformed));
    }
}
