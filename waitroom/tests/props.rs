//! Property tests: the token codec, the auditable shuffle and the controller's `plan`.
//!
//! Token guarantees (see `waitroom::token`): decoding arbitrary input never panics; any
//! flipped bit, truncation, extension, other room, other key, other client or other kind fails;
//! a token verifies up to `expires_at + leeway` and never after; every field round-trips.
//! Shuffle: `Permutation` is a bijection. Controller: serving never decreases, never runs
//! further ahead of the ticket counter than one slice of budget, never advances past free
//! capacity or in a state that does not admit, and a slice is planned at most once.

use std::num::NonZeroU32;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use proptest::sample::Index;
use waitroom::controller;
use waitroom::room::{admits, Effective};
use waitroom::shuffle::{self, Permutation};
use waitroom::state::{AdvanceRecord, ControllerState, MinuteCount, ShuffleRange};
use waitroom::token::{Expect, Inspected};
use waitroom::{
    Binding, EventSettings, KeyRing, Overrides, Pass, QueueingMethod, RoomSettings, RoomSnapshot,
    Ticket, TokenError, UnixMillis,
};

/// Seconds that still fit in a `UnixMillis` without saturating.
const MAX_SECS: u64 = u64::MAX / 1000;
const KEY: [u8; 32] = [7u8; 32];

fn ring() -> KeyRing {
    KeyRing::new(&[(1, &KEY)], 1).expect("valid key ring")
}

fn expect(room: &str, binding: u64, now: UnixMillis, leeway: Duration) -> Expect<'_> {
    Expect {
        room,
        binding,
        now,
        leeway,
    }
}

fn room_id() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,32}"
}

prop_compose! {
    fn ticket()(
        room in room_id(),
        event in any::<u32>(),
        number in any::<u64>(),
        issued_at in any::<u64>(),
        last_seen in 0..=MAX_SECS,
        life in any::<u64>(),
        binding in any::<u64>(),
        serving_at_issue in any::<u64>(),
    ) -> Ticket {
        Ticket {
            room,
            event,
            number,
            issued_at,
            last_seen,
            expires_at: last_seen.saturating_add(life),
            binding,
            serving_at_issue,
        }
    }
}

prop_compose! {
    fn pass()(
        room in room_id(),
        event in any::<u32>(),
        ticket in any::<u64>(),
        admitted_at in 0..=MAX_SECS,
        checkin_minute in any::<u32>(),
        life in any::<u64>(),
        binding in any::<u64>(),
        fixed_session in any::<bool>(),
    ) -> Pass {
        Pass {
            room,
            event,
            ticket,
            admitted_at,
            checkin_minute,
            expires_at: admitted_at.saturating_add(life),
            binding,
            fixed_session,
        }
    }
}

/// An expectation the ticket meets: its room and binding, at its own `last_seen`.
fn fits_ticket(t: &Ticket) -> Expect<'_> {
    expect(
        &t.room,
        t.binding,
        UnixMillis::from_secs(t.last_seen),
        Duration::ZERO,
    )
}

fn fits_pass(p: &Pass) -> Expect<'_> {
    expect(
        &p.room,
        p.binding,
        UnixMillis::from_secs(p.admitted_at),
        Duration::ZERO,
    )
}

fn decoded(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token)
        .expect("a minted token is base64url")
}

fn encoded(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Every way of reading `token` refuses it (and none panics).
fn refused_everywhere(r: &KeyRing, token: &str, e: &Expect<'_>) -> bool {
    r.verify_ticket(token, e).is_err()
        && r.verify_pass(token, e).is_err()
        && r.inspect(token).is_err()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    // -----------------------------------------------------------------------------------------
    // Decoding never panics

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,700}", b64 in "[A-Za-z0-9_-]{0,600}") {
        let r = ring();
        for input in [&s, &b64] {
            let e = expect("drop", 0, UnixMillis::from_secs(1_000), Duration::from_secs(5));
            let _ = r.verify_ticket(input, &e);
            let _ = r.verify_pass(input, &e);
            let _ = r.inspect(input);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        kind in 0u8..4,
        room_len in any::<u8>(),
    ) {
        let r = ring();
        let e = expect("drop", 0, UnixMillis::from_secs(1_000), Duration::from_secs(5));
        // Raw, and behind a plausible header so decoding gets past the first checks.
        let mut framed = vec![1, kind, 1, room_len];
        framed.extend_from_slice(&bytes);
        for input in [encoded(&bytes), encoded(&framed)] {
            prop_assert!(refused_everywhere(&r, &input, &e));
        }
    }

    /// Correctly signed garbage (a key holder's bug, or a forged key) is still decoded safely,
    /// and whatever verifies is exactly what minting that value produces: the encoding is
    /// canonical.
    #[test]
    fn signed_garbage_never_panics_and_what_verifies_is_canonical(
        kind in 1u8..=2,
        body in prop::collection::vec(any::<u8>(), 0..160),
    ) {
        let r = ring();
        let mut msg = vec![1, kind, 1];
        msg.extend_from_slice(&body);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &KEY);
        let tag = ring::hmac::sign(&key, &msg);
        msg.extend_from_slice(tag.as_ref());
        let token = encoded(&msg);
        let far = expect("", Binding::ANY, UnixMillis(0), Duration::from_secs(MAX_SECS));
        if let Ok(t) = r.verify_ticket(&token, &far) {
            prop_assert_eq!(r.sign_ticket(&t), token.clone());
        }
        if let Ok(p) = r.verify_pass(&token, &far) {
            prop_assert_eq!(r.sign_pass(&p), token.clone());
        }
        let _ = r.inspect(&token);
    }

    // -----------------------------------------------------------------------------------------
    // Round trips

    #[test]
    fn ticket_fields_round_trip(t in ticket()) {
        let r = ring();
        let token = r.sign_ticket(&t);
        prop_assert!(token.len() <= waitroom::token::MAX_TOKEN_LEN);
        prop_assert_eq!(r.verify_ticket(&token, &fits_ticket(&t)), Ok(t.clone()));
        if t.last_seen <= u64::from(u32::MAX) {
            prop_assert_eq!(r.inspect(&token), Ok(Inspected::Ticket(t)));
        }
    }

    #[test]
    fn pass_fields_round_trip(p in pass()) {
        let r = ring();
        let token = r.sign_pass(&p);
        prop_assert!(token.len() <= waitroom::token::MAX_TOKEN_LEN);
        prop_assert_eq!(r.verify_pass(&token, &fits_pass(&p)), Ok(p.clone()));
        if p.admitted_at <= u64::from(u32::MAX) {
            prop_assert_eq!(r.inspect(&token), Ok(Inspected::Pass(p)));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Tampering

    #[test]
    fn any_flipped_bit_fails(t in ticket(), p in pass(), bit in any::<Index>()) {
        let r = ring();
        for (token, e) in [(r.sign_ticket(&t), fits_ticket(&t)), (r.sign_pass(&p), fits_pass(&p))] {
            let mut bytes = decoded(&token);
            let i = bit.index(bytes.len() * 8);
            bytes[i / 8] ^= 1 << (i % 8);
            prop_assert!(refused_everywhere(&r, &encoded(&bytes), &e), "bit {} flipped", i);
        }
    }

    #[test]
    fn any_truncation_fails(t in ticket(), p in pass(), cut in any::<Index>()) {
        let r = ring();
        for (token, e) in [(r.sign_ticket(&t), fits_ticket(&t)), (r.sign_pass(&p), fits_pass(&p))] {
            let bytes = decoded(&token);
            let keep = cut.index(bytes.len());
            prop_assert!(refused_everywhere(&r, &encoded(&bytes[..keep]), &e));
            let chars = cut.index(token.len());
            prop_assert!(refused_everywhere(&r, &token[..chars], &e));
        }
    }

    #[test]
    fn any_extension_fails(
        t in ticket(),
        p in pass(),
        extra in prop::collection::vec(any::<u8>(), 1..40),
    ) {
        let r = ring();
        for (token, e) in [(r.sign_ticket(&t), fits_ticket(&t)), (r.sign_pass(&p), fits_pass(&p))] {
            let mut bytes = decoded(&token);
            bytes.extend_from_slice(&extra);
            prop_assert!(refused_everywhere(&r, &encoded(&bytes), &e));
        }
    }

    #[test]
    fn other_room_fails(t in ticket(), p in pass(), other in room_id()) {
        prop_assume!(other != t.room && other != p.room);
        let r = ring();
        let mut e = fits_ticket(&t);
        e.room = &other;
        prop_assert_eq!(r.verify_ticket(&r.sign_ticket(&t), &e), Err(TokenError::WrongRoom));
        let mut e = fits_pass(&p);
        e.room = &other;
        prop_assert_eq!(r.verify_pass(&r.sign_pass(&p), &e), Err(TokenError::WrongRoom));
    }

    #[test]
    fn other_key_fails_and_rotation_keeps_old_tokens(
        t in ticket(),
        p in pass(),
        secret in any::<[u8; 32]>(),
        id in 2u8..=255,
    ) {
        prop_assume!(secret != KEY);
        let r = ring();
        let (tt, pt) = (r.sign_ticket(&t), r.sign_pass(&p));
        let forged = KeyRing::new(&[(1, &secret)], 1).expect("valid key ring");
        prop_assert_eq!(forged.verify_ticket(&tt, &fits_ticket(&t)), Err(TokenError::BadSignature));
        prop_assert_eq!(forged.verify_pass(&pt, &fits_pass(&p)), Err(TokenError::BadSignature));
        let other = KeyRing::new(&[(id, &KEY)], id).expect("valid key ring");
        prop_assert_eq!(other.verify_ticket(&tt, &fits_ticket(&t)), Err(TokenError::UnknownKey(1)));
        // Rotation: a ring that signs with a new key still verifies tokens of the old one.
        let rotated = KeyRing::new(&[(1, &KEY), (id, &secret)], id).expect("valid key ring");
        prop_assert_eq!(rotated.verify_ticket(&tt, &fits_ticket(&t)), Ok(t.clone()));
        prop_assert_eq!(rotated.verify_pass(&pt, &fits_pass(&p)), Ok(p.clone()));
        // And what the new key signs, a ring without it refuses.
        prop_assert_eq!(r.verify_ticket(&rotated.sign_ticket(&t), &fits_ticket(&t)), Err(TokenError::UnknownKey(id)));
    }

    #[test]
    fn kind_confusion_fails(t in ticket(), p in pass()) {
        let r = ring();
        let e = expect("", Binding::ANY, UnixMillis(0), Duration::from_secs(MAX_SECS));
        prop_assert_eq!(r.verify_pass(&r.sign_ticket(&t), &e), Err(TokenError::WrongKind));
        prop_assert_eq!(r.verify_ticket(&r.sign_pass(&p), &e), Err(TokenError::WrongKind));
    }

    #[test]
    fn other_client_fails(mut t in ticket(), bound in 1..u64::MAX, other in 1..u64::MAX) {
        prop_assume!(bound != other);
        t.binding = bound;
        let r = ring();
        let token = r.sign_ticket(&t);
        let room = t.room.clone();
        let at = UnixMillis::from_secs(t.last_seen);
        let e = expect(&room, other, at, Duration::ZERO);
        prop_assert_eq!(r.verify_ticket(&token, &e), Err(TokenError::WrongClient));
        // An unbound token works for any client.
        t.binding = Binding::NONE;
        let token = r.sign_ticket(&t);
        prop_assert!(r.verify_ticket(&token, &e).is_ok());
    }

    // -----------------------------------------------------------------------------------------
    // Expiry

    /// A token verifies through the whole second `expires_at + leeway` and never after it; it
    /// is refused as from the future when dated more than the leeway ahead.
    #[test]
    fn verifies_until_expiry_plus_leeway_and_never_after(
        mut t in ticket(),
        mut p in pass(),
        expires in 0u64..1_000_000_000_000,
        age in 0u64..10_000_000,
        leeway_s in 0u64..=300,
        ms in 0u64..1000,
        later in 1u64..1_000_000_000,
    ) {
        let r = ring();
        let leeway = Duration::from_secs(leeway_s);
        t.expires_at = expires;
        t.last_seen = expires.saturating_sub(age);
        p.expires_at = expires;
        p.admitted_at = expires.saturating_sub(age);
        let (tt, pt) = (r.sign_ticket(&t), r.sign_pass(&p));
        let at = |secs: u64, ms: u64| UnixMillis(secs * 1000 + ms);
        let last = at(expires + leeway_s, ms);
        prop_assert!(r.verify_ticket(&tt, &expect(&t.room, t.binding, last, leeway)).is_ok());
        prop_assert!(r.verify_pass(&pt, &expect(&p.room, p.binding, last, leeway)).is_ok());
        let after = at(expires + leeway_s + later, ms);
        prop_assert_eq!(r.verify_ticket(&tt, &expect(&t.room, t.binding, after, leeway)), Err(TokenError::Expired));
        prop_assert_eq!(r.verify_pass(&pt, &expect(&p.room, p.binding, after, leeway)), Err(TokenError::Expired));
        if t.last_seen > leeway_s {
            let early = at(t.last_seen - leeway_s - 1, ms);
            prop_assert_eq!(r.verify_ticket(&tt, &expect(&t.room, t.binding, early, leeway)), Err(TokenError::FromTheFuture));
            let first = at(t.last_seen - leeway_s, 0);
            prop_assert!(r.verify_ticket(&tt, &expect(&t.room, t.binding, first, leeway)).is_ok());
        }
    }

    #[test]
    fn huge_permutations_stay_in_range_and_injective(
        seed in any::<[u8; 32]>(),
        count in 1u64 << 20..=u64::MAX,
        picks in prop::collection::vec(any::<Index>(), 1..24),
    ) {
        let p = Permutation::new(&seed, count);
        let mut items: Vec<u64> = picks.iter().map(|i| i.index(usize::MAX) as u64 % count).collect();
        items.sort_unstable();
        items.dedup();
        let mut positions: Vec<u64> = items.iter().map(|i| p.position(*i)).collect();
        prop_assert!(positions.iter().all(|x| *x < count));
        positions.sort_unstable();
        positions.dedup();
        prop_assert_eq!(positions.len(), items.len());
    }
}

proptest! {
    // Each case checks a whole permutation (thousands of HMACs in a debug build).
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn permutation_is_a_bijection(seed in any::<[u8; 32]>(), count in 0u64..3000) {
        let p = Permutation::new(&seed, count);
        prop_assert_eq!(p.count(), count);
        let mut seen = vec![false; count as usize];
        for i in 0..count {
            let pos = p.position(i);
            prop_assert!(pos < count, "position {} of {} is out of range", pos, count);
            prop_assert!(!seen[pos as usize], "two items at position {}", pos);
            seen[pos as usize] = true;
        }
        // `order` is the inverse, and indexes past the end are left alone.
        for (place, item) in shuffle::order(&seed, count).iter().enumerate() {
            prop_assert_eq!(p.position(*item), place as u64);
        }
        prop_assert_eq!(p.position(count + 7), count + 7);
    }
}

// ---------------------------------------------------------------------------------------------
// The controller's plan on arbitrary snapshots

const T0: u64 = 1_750_000_000_000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

#[derive(Debug, Clone)]
struct Case {
    settings: RoomSettings,
    snap: RoomSnapshot,
    now: UnixMillis,
}

prop_compose! {
    fn settings()(
        rate in 1u32..=1000,
        extra_cap in 0u32..4000,
        tick_ms in 100u64..=2000,
        claim_s in 10u64..=120,
        session_s in 60u64..=3600,
        noshow_tenths in 0u32..=9,
        method in prop::sample::select(vec![
            QueueingMethod::Fifo, QueueingMethod::Fifo, QueueingMethod::Random,
            QueueingMethod::Passthrough, QueueingMethod::Reject,
        ]),
        // An event around T0: (pre-queue opens, starts) as offsets in seconds, shuffled or not.
        event in prop::option::of((0u64..600, 0u64..600, any::<bool>())),
    ) -> RoomSettings {
        let mut s = RoomSettings::new("drop", nz(rate), nz(rate + extra_cap));
        s.tick = Duration::from_millis(tick_ms);
        s.claim_window = Duration::from_secs(claim_s);
        s.session_duration = Duration::from_secs(session_s);
        s.max_noshow = f64::from(noshow_tenths) / 10.0;
        s.method = method;
        s.seed_secret = [9u8; 32];
        if let Some((pre, start, shuffle)) = event {
            let starts_at = T0 + (pre + start + 1) * 1000;
            let prequeue_at = Some(UnixMillis(T0 + pre * 1000));
            let ends_at = UnixMillis(starts_at + 3_600_000);
            let window = EventSettings::window("launch", prequeue_at, UnixMillis(starts_at), ends_at, shuffle);
            s.events.push(window);
        }
        s
    }
}

prop_compose! {
    fn case()(settings in settings())(
        now_ms in 0u64..1_500_000,
        issued in 0u64..100_000,
        // Far behind the counter (a deep queue), or close to it (an idle room's lead).
        serving_rel in prop_oneof![-2000i64..0, -5i64..=20],
        version in 0u64..3,
        since_tick in 0u64..10_000,
        credit_milli in 0u64..100_000,
        same_minute in any::<bool>(),
        advanced in 0u64..1000,
        history in prop::collection::vec((0u64..200_000, 1u64..60, 0u64..=100), 0..8),
        active in prop::collection::vec((0u32..70, 0u64..2000), 0..6),
        noshow_milli in 0u32..=1000,
        // Each switch is on in about one case in six.
        overrides in (0u8..6, 0u8..6, 0u8..6, 0u8..6, prop::option::of(1u32..2000), prop::option::of(1u32..5000)),
        phase_seen in (any::<bool>(), any::<bool>()),
        draw in prop::option::of((0u64..500, 0u64..500)),
        settings in Just(settings),
    ) -> Case {
        let now = UnixMillis(T0 + now_ms);
        let serving = issued.saturating_add_signed(serving_rel);
        // History: consecutive advances ending at `serving`, newest last.
        let mut records = Vec::new();
        let mut after = serving;
        for (age, admitted, claimed_pct) in history {
            if after < admitted {
                break;
            }
            records.push(AdvanceRecord {
                at: UnixMillis(now.0.saturating_sub(age)),
                serving_after: after,
                admitted,
                claimed: admitted * claimed_pct / 100,
            });
            after -= admitted;
        }
        records.reverse();
        records.sort_by_key(|r| r.at); // older advances first, as the controller keeps them
        let mut ranges = Vec::new();
        if let Some((back, ahead)) = draw {
            let lo = serving.saturating_sub(back);
            let hi = (serving + ahead).min(issued).max(lo + 1);
            ranges.push(ShuffleRange { lo, hi, seed: [3u8; 32] });
        }
        let event_id = EventSettings::id_for("launch");
        let (paused, queue_all, drain, sold_out, rate, cap) = overrides;
        let snap = RoomSnapshot {
            time: now,
            issued,
            claimed_total: 0,
            active: active
                .iter()
                .map(|(back, count)| MinuteCount { minute: now.minute().saturating_sub(*back), count: *count })
                .collect(),
            claims_minute: now.minute(),
            claims_in_minute: 0,
            ctl: ControllerState {
                version,
                last_tick: UnixMillis(now.0.saturating_sub(since_tick)),
                serving,
                credit_milli,
                minute: if same_minute { now.minute() } else { now.minute() - 1 },
                advanced_in_minute: advanced,
                history: records,
                ranges,
                noshow_milli,
                draws: 1,
                prequeue_event: if phase_seen.0 { event_id } else { 0 },
                prequeue_base: issued / 2,
                started_event: if phase_seen.1 { event_id } else { 0 },
                prequeue_count: 0,
                admitted_total: serving,
            },
            overrides: Overrides {
                new_users_per_minute: rate,
                total_active_users: cap,
                paused: paused == 0,
                queue_all: queue_all == 0,
                drain: drain == 0,
                sold_out: sold_out == 0,
                message: None,
            },
        };
        Case { settings, snap, now }
    }
}

fn slice_of(c: &Case) -> u64 {
    let tick = c.settings.tick.as_millis() as u64;
    c.now.0 / tick * tick
}

/// One slice of the largest possible budget (fully no-show-compensated), at least one.
fn lead_bound(c: &Case) -> u64 {
    let eff = Effective::at(&c.settings, &c.snap.overrides, c.now);
    let noshow = (c.settings.max_noshow * 1000.0) as u64;
    let per_min = u64::from(eff.new_users_per_minute) * 1_000_000 / (1000 - noshow);
    (per_min * c.settings.tick.as_millis() as u64 / 60_000)
        .div_ceil(1000)
        .max(1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn plan_respects_order_rate_lead_and_capacity(c in case()) {
        let old = &c.snap.ctl;
        let slice = slice_of(&c);
        let next = controller::plan(&c.settings, &c.snap, c.now);
        let done = old.version > 0 && old.last_tick.0 >= slice;
        prop_assert_eq!(next.is_none(), done, "a slice is planned once");
        let Some(next) = next else { return Ok(()) };
        prop_assert_eq!(next.last_tick, UnixMillis(slice));
        // Serving never decreases.
        prop_assert!(next.serving >= old.serving, "serving {} -> {}", old.serving, next.serving);
        let delta = next.serving - old.serving;
        let eff = Effective::at(&c.settings, &c.snap.overrides, c.now);
        let state = eff.state(&c.snap);
        if delta == 0 {
            if !admits(state) {
                prop_assert_eq!(next.credit_milli, 0, "a room that does not admit banks no credit");
            }
            return Ok(());
        }
        prop_assert!(admits(state), "advanced {} in state {:?}", delta, state);
        // The same, from the inputs rather than the crate's own state machine.
        let o = &c.snap.overrides;
        prop_assert!(!o.paused && !o.queue_all && !o.sold_out, "advanced {} with overrides {:?}", delta, o);
        let prequeue = c.settings.events.iter().any(|e| {
            e.prequeue_at.is_some_and(|p| p <= c.now) && c.now < e.starts_at
        });
        prop_assert!(!prequeue, "advanced {} during the pre-queue", delta);
        prop_assert!(matches!(eff.method, QueueingMethod::Fifo | QueueingMethod::Random));
        // Never further ahead of the ticket counter than one slice of budget.
        prop_assert!(
            next.serving <= c.snap.issued + lead_bound(&c),
            "serving {} > issued {} + lead {}", next.serving, c.snap.issued, lead_bound(&c)
        );
        // Never past free capacity: the cap minus the active and the admitted-but-unclaimed.
        let active = c.snap.active_total(c.now.minute(), eff.session_minutes());
        let pending = c.snap.pending(c.now, c.settings.claim_window);
        let free = u64::from(eff.total_active_users).saturating_sub(active + pending);
        prop_assert!(delta <= free, "advanced {} with {} free (active {}, pending {})", delta, free, active, pending);
        // Never more than the compensated rate in one minute.
        let noshow = (c.settings.max_noshow * 1000.0) as u64;
        let minute_cap = (u64::from(eff.new_users_per_minute) * 1_000_000 / (1000 - noshow)).div_ceil(1000);
        prop_assert!(next.advanced_in_minute <= minute_cap.max(old.advanced_in_minute));
        // The advance is recorded for the claim path and the no-show estimate.
        let last = next.history.last().copied();
        prop_assert_eq!(last.map(|r| (r.serving_after, r.admitted, r.at)), Some((next.serving, delta, c.now)));
        prop_assert_eq!(next.admitted_total, old.admitted_total + delta);
    }

    /// After a commit, planning again anywhere in the same slice does nothing: any number of
    /// nodes may tick, one wins per slice. The next slice plans again.
    #[test]
    fn plan_twice_in_a_slice_is_a_no_op(c in case(), later in 0u64..2000) {
        let Some(mut next) = controller::plan(&c.settings, &c.snap, c.now) else { return Ok(()) };
        next.version = c.snap.ctl.version + 1;
        let mut snap = c.snap.clone();
        snap.ctl = next;
        let tick = c.settings.tick.as_millis() as u64;
        let slice = slice_of(&c);
        let again = UnixMillis((c.now.0 + later).min(slice + tick - 1));
        snap.time = again;
        prop_assert_eq!(controller::plan(&c.settings, &snap, again), None);
        let following = UnixMillis(slice + tick);
        snap.time = following;
        prop_assert!(controller::plan(&c.settings, &snap, following).is_some());
    }
}
