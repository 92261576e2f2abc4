//! Proof-of-work solutions.

use super::*;

const ROOM: &str = "drop";

fn signer() -> Signer {
    Signer::new(&[9u8; 32])
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn solution_bodies_never_panic(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        (any::<u64>(), "[ -~]{0,300}", "[ -~]{0,40}").prop_map(|(c, tok, room)| {
            format!("room={room}&challenge={tok}&counter={c}&return=%2Fx").into_bytes()
        }),
    ]) {
        let signer = signer();
        match bot::parse_solution(&body) {
            Err(e) => prop_assert_eq!(e, ChallengeError::Malformed),
            Ok(sol) => {
                prop_assert!(!sol.room.is_empty() && !sol.challenge.is_empty());
                // Nothing we did not sign verifies, whatever the counter.
                let r = signer.verify_solution(&sol.room, &sol.challenge, sol.counter, 0, NOW);
                prop_assert!(r.is_err(), "forged solution accepted: {sol:?}");
            }
        }
    }

    #[test]
    fn only_our_own_challenges_verify(
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
        counter in any::<u64>(),
        binding in any::<u64>(),
        at in 0u64..200_000,
    ) {
        let signer = signer();
        let c = signer.challenge(ROOM, 4, 7, NOW, Duration::from_secs(120), [3u8; 16]);
        let solved = bot::challenge::solve(&c.token, 4);
        let now = UnixMillis(NOW.0 + at);
        let honest = signer.verify_solution(ROOM, &c.token, solved, 7, now);
        prop_assert_eq!(honest.is_ok(), at <= 120_000, "{:?}", honest);
        // Another client, another room: refused.
        if binding != 7 {
            prop_assert!(signer.verify_solution(ROOM, &c.token, solved, binding, NOW).is_err());
        }
        prop_assert!(signer.verify_solution("other", &c.token, solved, 7, NOW).is_err());
        // A flipped bit anywhere in the token: refused.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut raw = b64.decode(&c.token).expect("our token decodes");
        let i = flip.index(raw.len());
        raw[i] ^= 1 << bit;
        let forged = b64.encode(&raw);
        prop_assert!(signer.verify_solution(ROOM, &forged, counter, 7, NOW).is_err());
        // Another key: refused.
        let other = Signer::new(&[8u8; 32]);
        prop_assert!(other.verify_solution(ROOM, &c.token, solved, 7, NOW).is_err());
    }
}
