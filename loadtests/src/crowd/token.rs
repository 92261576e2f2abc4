//! Reading the public fields of Flashgate tokens, without the key.
//!
//! The simulator needs a shopper's ticket number (for the FIFO check) even when the shopper
//! was let in on the first request, and the server's minute of entry (for the per-minute cap
//! check) — both are in the tokens Flashgate sets as cookies. Tokens are signed, not
//! encrypted: this reads them without verifying (it has no key), so it is for measurement
//! only. Layout (version 1, `waitroom/src/token.rs`): version, kind (1 ticket, 2 pass), key id,
//! room length, room, event (u32 BE), ticket number (u64 BE), then for a pass admitted-at
//! (u64 BE) and check-in minute (u32 BE); a 32-byte HMAC tag ends the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    Ticket {
        room: String,
        event: u32,
        number: u64,
    },
    Pass {
        room: String,
        event: u32,
        ticket: u64,
        admitted_at: u64,
        checkin_minute: u32,
    },
}

const TAG_LEN: usize = 32;

/// Reads a token's fields without verifying it; `None` if it is not a version-1 token.
pub fn peek(token: &str) -> Option<Peeked> {
    let b = URL_SAFE_NO_PAD.decode(token.trim().as_bytes()).ok()?;
    if b.len() < 4 + TAG_LEN || b[0] != 1 {
        return None;
    }
    let body = &b[..b.len() - TAG_LEN];
    let room_len = usize::from(body[3]);
    let room = std::str::from_utf8(body.get(4..4 + room_len)?)
        .ok()?
        .to_owned();
    let rest = &body[4 + room_len..];
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(rest.get(i..i + 4)?.try_into().ok()?))
    };
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_be_bytes(rest.get(i..i + 8)?.try_into().ok()?))
    };
    let event = u32_at(0)?;
    let number = u64_at(4)?;
    match body[1] {
        1 => Some(Peeked::Ticket {
            room,
            event,
            number,
        }),
        2 => Some(Peeked::Pass {
            room,
            event,
            ticket: number,
            admitted_at: u64_at(12)?,
            checkin_minute: u32_at(20)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waitroom::token::{KeyRing, Pass, Ticket};

    #[test]
    fn reads_what_waitroom_signs() {
        let keys = KeyRing::new(&[(3, b"0123456789abcdef0123456789abcdef".as_slice())], 3)
            .expect("key ring");
        let t = Ticket {
            room: "drop".into(),
            event: 7,
            number: 123_456,
            issued_at: 1_800_000_000,
            last_seen: 1_800_000_010,
            expires_at: 1_800_000_100,
            binding: 0,
            serving_at_issue: 100,
        };
        assert_eq!(
            peek(&keys.sign_ticket(&t)),
            Some(Peeked::Ticket {
                room: "drop".into(),
                event: 7,
                number: 123_456
            })
        );
        let p = Pass {
            room: "drop".into(),
            event: 7,
            ticket: 99,
            admitted_at: 1_800_000_050,
            checkin_minute: 30_000_000,
            expires_at: 1_800_000_650,
            binding: 0,
            fixed_session: false,
        };
        assert_eq!(
            peek(&keys.sign_pass(&p)),
            Some(Peeked::Pass {
                room: "drop".into(),
                event: 7,
                ticket: 99,
                admitted_at: 1_800_000_050,
                checkin_minute: 30_000_000
            })
        );
        assert_eq!(peek("not a token"), None);
        assert_eq!(peek(""), None);
    }
}
