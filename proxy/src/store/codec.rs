//! The text forms of [`ControllerState`] and [`Overrides`] stored in Redis (`waitroom` has no
//! serde, and the Lua scripts must read a few fields of the controller state themselves).
//!
//! Controller state, one line, fields separated by `|`, numbers in decimal:
//!
//! ```text
//! c1|version|serving|last_tick|credit_milli|minute|advanced_in_minute|noshow_milli|draws|
//!   prequeue_event|prequeue_base|started_event|prequeue_count|admitted_total|HISTORY|RANGES
//! HISTORY = at:serving_after:admitted:claimed,...    (empty when none)
//! RANGES  = lo:hi:seed-as-64-hex-digits,...          (empty when none)
//! ```
//!
//! The scripts rely on field 2 (version), 3 (serving) and 15 (history) — 1-based, as Lua
//! counts. A new layout gets a new tag (`c2`); a reader refuses tags it does not know instead
//! of guessing.
//!
//! Overrides: `o1|new_users_per_minute|total_active_users|flags|message`, where empty numbers
//! are `None`, `flags` is four `0`/`1` digits (paused, queue_all, drain, sold_out) and the
//! message is `-` for none or `+` followed by the text (which may itself contain `|`: it is the
//! last field).

use waitroom::state::{AdvanceRecord, ControllerState, Overrides, ShuffleRange};
use waitroom::time::UnixMillis;
use waitroom::StoreError;

const CTL_TAG: &str = "c1";
const OVR_TAG: &str = "o1";

fn bad(what: &str) -> StoreError {
    StoreError::Protocol(format!("undecodable {what}"))
}

/// Encodes a controller state.
pub fn encode_ctl(c: &ControllerState) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(128 + c.history.len() * 40 + c.ranges.len() * 90);
    let _ = write!(
        s,
        "{CTL_TAG}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
        c.version,
        c.serving,
        c.last_tick.0,
        c.credit_milli,
        c.minute,
        c.advanced_in_minute,
        c.noshow_milli,
        c.draws,
        c.prequeue_event,
        c.prequeue_base,
        c.started_event,
        c.prequeue_count,
        c.admitted_total,
    );
    for (i, r) in c.history.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            s,
            "{sep}{}:{}:{}:{}",
            r.at.0, r.serving_after, r.admitted, r.claimed
        );
    }
    s.push('|');
    for (i, r) in c.ranges.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            s,
            "{sep}{}:{}:{}",
            r.lo,
            r.hi,
            waitroom::shuffle::hex(&r.seed)
        );
    }
    s
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| bad(what))
}

fn seed(hex: &str) -> Result<[u8; 32], StoreError> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return Err(bad("shuffle seed"));
    }
    let nibble = |c: u8| -> Result<u8, StoreError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(bad("shuffle seed")),
        }
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(b[2 * i])? << 4 | nibble(b[2 * i + 1])?;
    }
    Ok(out)
}

/// Decodes a controller state; an empty string is the state of a room that never ran.
pub fn decode_ctl(s: &str) -> Result<ControllerState, StoreError> {
    if s.is_empty() {
        return Ok(ControllerState::default());
    }
    let f: Vec<&str> = s.split('|').collect();
    if f.first() != Some(&CTL_TAG) {
        return Err(StoreError::Protocol(format!(
            "controller state in an unknown format ({:?}); is an older or newer flashgate \
             sharing this Redis?",
            f.first().unwrap_or(&"")
        )));
    }
    if f.len() != 16 {
        return Err(bad("controller state"));
    }
    let mut history = Vec::new();
    for rec in f[14].split(',').filter(|r| !r.is_empty()) {
        let p: Vec<&str> = rec.split(':').collect();
        if p.len() != 4 {
            return Err(bad("advance record"));
        }
        history.push(AdvanceRecord {
            at: UnixMillis(num(p[0], "advance record")?),
            serving_after: num(p[1], "advance record")?,
            admitted: num(p[2], "advance record")?,
            claimed: num(p[3], "advance record")?,
        });
    }
    let mut ranges = Vec::new();
    for rec in f[15].split(',').filter(|r| !r.is_empty()) {
        let p: Vec<&str> = rec.split(':').collect();
        if p.len() != 3 {
            return Err(bad("shuffle range"));
        }
        ranges.push(ShuffleRange {
            lo: num(p[0], "shuffle range")?,
            hi: num(p[1], "shuffle range")?,
            seed: seed(p[2])?,
        });
    }
    let n = |i: usize| num::<u64>(f[i], "controller state");
    let n32 = |i: usize| num::<u32>(f[i], "controller state");
    Ok(ControllerState {
        version: n(1)?,
        serving: n(2)?,
        last_tick: UnixMillis(n(3)?),
        credit_milli: n(4)?,
        minute: n32(5)?,
        advanced_in_minute: n(6)?,
        noshow_milli: n32(7)?,
        draws: n(8)?,
        prequeue_event: n32(9)?,
        prequeue_base: n(10)?,
        started_event: n32(11)?,
        prequeue_count: n(12)?,
        admitted_total: n(13)?,
        history,
        ranges,
    })
}

/// Encodes live overrides.
pub fn encode_overrides(o: &Overrides) -> String {
    let opt = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
    let bit = |b: bool| if b { '1' } else { '0' };
    let msg = match &o.message {
        Some(m) => format!("+{m}"),
        None => "-".to_owned(),
    };
    format!(
        "{OVR_TAG}|{}|{}|{}{}{}{}|{msg}",
        opt(o.new_users_per_minute),
        opt(o.total_active_users),
        bit(o.paused),
        bit(o.queue_all),
        bit(o.drain),
        bit(o.sold_out),
    )
}

/// Decodes live overrides; an empty string means none were ever set.
pub fn decode_overrides(s: &str) -> Result<Overrides, StoreError> {
    if s.is_empty() {
        return Ok(Overrides::default());
    }
    let f: Vec<&str> = s.splitn(5, '|').collect();
    if f.len() != 5 || f[0] != OVR_TAG {
        return Err(bad("overrides"));
    }
    let opt = |v: &str| -> Result<Option<u32>, StoreError> {
        if v.is_empty() {
            Ok(None)
        } else {
            num(v, "overrides").map(Some)
        }
    };
    let flags = f[3].as_bytes();
    if flags.len() != 4 || !flags.iter().all(|b| *b == b'0' || *b == b'1') {
        return Err(bad("overrides"));
    }
    let message = match f[4].split_at_checked(1) {
        Some(("-", "")) => None,
        Some(("+", m)) => Some(m.to_owned()),
        _ => return Err(bad("overrides")),
    };
    Ok(Overrides {
        new_users_per_minute: opt(f[1])?,
        total_active_users: opt(f[2])?,
        paused: flags[0] == b'1',
        queue_all: flags[1] == b'1',
        drain: flags[2] == b'1',
        sold_out: flags[3] == b'1',
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ControllerState {
        ControllerState {
            version: u64::MAX,
            last_tick: UnixMillis(1_800_000_000_123),
            serving: 123_456_789,
            credit_milli: 2_500,
            minute: 30_000_000,
            advanced_in_minute: 17,
            history: vec![
                AdvanceRecord {
                    at: UnixMillis(1_800_000_000_000),
                    serving_after: 100,
                    admitted: 10,
                    claimed: 3,
                },
                AdvanceRecord {
                    at: UnixMillis(1_800_000_001_000),
                    serving_after: 110,
                    admitted: 10,
                    claimed: 0,
                },
            ],
            ranges: vec![
                ShuffleRange {
                    lo: 0,
                    hi: 5_000,
                    seed: [0xab; 32],
                },
                ShuffleRange {
                    lo: 5_000,
                    hi: 9_000,
                    seed: std::array::from_fn(|i| i as u8),
                },
            ],
            noshow_milli: 499,
            draws: 7,
            prequeue_event: u32::MAX,
            prequeue_base: 42,
            started_event: 3,
            prequeue_count: 4_958,
            admitted_total: 1 << 60,
        }
    }

    #[test]
    fn controller_state_round_trips() {
        for c in [ControllerState::default(), full()] {
            let text = encode_ctl(&c);
            assert_eq!(decode_ctl(&text), Ok(c), "{text}");
        }
        assert_eq!(decode_ctl(""), Ok(ControllerState::default()));
        // The fields the Lua scripts read are where the scripts look for them.
        let text = encode_ctl(&full());
        let f: Vec<&str> = text.split('|').collect();
        assert_eq!((f[1], f[2]), (u64::MAX.to_string().as_str(), "123456789"));
        assert!(f[14].starts_with("1800000000000:100:10:3,"));
    }

    #[test]
    fn unknown_or_damaged_controller_state_is_refused() {
        assert!(matches!(
            decode_ctl("c9|1|2"),
            Err(StoreError::Protocol(m)) if m.contains("unknown format")
        ));
        let text = encode_ctl(&full());
        assert!(decode_ctl(&text[..text.len() - 3]).is_err());
        assert!(decode_ctl(&text.replace("123456789", "12x")).is_err());
        assert!(decode_ctl("c1|1").is_err());
    }

    #[test]
    fn overrides_round_trip() {
        let all = [
            Overrides::default(),
            Overrides {
                new_users_per_minute: Some(120),
                total_active_users: Some(u32::MAX),
                paused: true,
                queue_all: false,
                drain: true,
                sold_out: true,
                message: Some("back at 6 | soon: 50% off, \"quoted\"\nline".into()),
            },
            Overrides {
                message: Some(String::new()),
                ..Overrides::default()
            },
        ];
        for o in all {
            let text = encode_overrides(&o);
            assert_eq!(decode_overrides(&text), Ok(o), "{text}");
        }
        assert!(decode_overrides("o1|x||0000|-").is_err());
        assert!(decode_overrides("o1|||000|-").is_err());
        assert!(decode_overrides("o1|||0000|").is_err());
    }
}
