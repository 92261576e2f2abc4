//! Cookies, client address, query strings, paths, hosts.

use super::*;

/// Cookie-header-ish bytes: mostly `name=value; ` pairs (some of them ours), sometimes noise.
fn cookie_header() -> impl Strategy<Value = Vec<u8>> {
    let ours = &["fg_p_drop", "fg_t_drop", "fg_c_drop", " fg_x", "shop_cart"];
    let name = prop_oneof![5 => word(ours), 1 => "[ -~]{0,12}"];
    let value = prop_oneof!["[ -~]{0,24}", Just("\"quoted;x\"".to_owned())];
    let pair = (name, value).prop_map(|(n, v)| format!("{n}={v}"));
    prop_oneof![
        4 => proptest::collection::vec(pair, 0..8).prop_map(|p| p.join("; ").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..128),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        // Often inside the trusted range, to walk the chain.
        any::<u8>().prop_map(|b| IpAddr::from([10, 0, 0, b])),
    ]
}

fn xff() -> impl Strategy<Value = String> {
    let entry = prop_oneof![
        ip().prop_map(|i| i.to_string()),
        "[ -~]{0,20}",
        Just(String::new()),
    ];
    proptest::collection::vec(entry, 0..6).prop_map(|v| v.join(", "))
}

fn path_like() -> impl Strategy<Value = String> {
    let tricks = &[
        "/", "//", ".", "..", "%2e", "%2F", "%5c", "\\", ";x=1", "drops", "%64", "%", "%zz",
    ];
    let piece = prop_oneof![13 => word(tricks), 1 => "[a-z0-9]{1,4}", 1 => "\\PC{1,3}"];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn cookie_parsing_never_panics_and_the_origin_never_sees_our_cookies(
        headers in proptest::collection::vec(cookie_header(), 0..3),
        name in prop_oneof![Just("fg_p_drop".to_owned()), "[a-z_]{1,10}"],
    ) {
        let got = cookie(headers.iter().map(Vec::as_slice), &name);
        if let Some(v) = got {
            prop_assert!(!v.contains(';'), "a cookie value never spans pairs: {v:?}");
        }
        for h in &headers {
            let Ok(text) = std::str::from_utf8(h) else { continue };
            if let Some(kept) = strip_own_cookies(text) {
                for pair in kept.split(';') {
                    prop_assert!(!pair.trim().starts_with("fg_"), "{pair:?} left in {kept:?}");
                }
                // What the gate would read from the stripped header: none of ours.
                for ours in ["fg_p_drop", "fg_t_drop", "fg_c_drop", "fg_x"] {
                    prop_assert_eq!(cookie([kept.as_bytes()].into_iter(), ours), None);
                }
            }
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers(peer in ip(), chain in xff()) {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let is_trusted = |i: &IpAddr| trusted.iter().any(|n| n.contains(i));
        let got = client_ip(Some(peer), Some(&chain), &trusted).expect("a peer gives an address");
        if !is_trusted(&peer) {
            prop_assert_eq!(got, peer);
        } else {
            // The peer itself, or an address named in the chain.
            let named: Vec<IpAddr> = chain.split(',').filter_map(|p| p.trim().parse().ok()).collect();
            prop_assert!(got == peer || named.contains(&got), "{got} from {chain:?}");
        }
        prop_assert_eq!(client_ip(None, Some(&chain), &trusted), None);
    }

    #[test]
    fn query_strings_never_panic_and_encoding_round_trips(
        raw in proptest::collection::vec(any::<u8>(), 0..256),
        value in "\\PC{0,40}",
        name in "k[a-z]{0,7}",
    ) {
        let q = String::from_utf8_lossy(&raw);
        let _ = query_param(Some(&q), &name);
        let encoded = format!("x=1&{name}={}&y=2", percent_encode(&value));
        let decoded = query_param(Some(&encoded), &name);
        prop_assert_eq!(decoded.as_deref(), Some(value.as_str()));
    }

    #[test]
    fn canonical_paths_are_normal_forms(raw in path_like()) {
        match canonical_path(&raw) {
            Err(_) => {
                // Only a control character (raw or escaped) is refused.
                let decoded_has_ctl = raw.bytes().any(|b| b.is_ascii_control())
                    || raw.to_ascii_lowercase().as_bytes().windows(3).any(|w| {
                        w[0] == b'%'
                            && std::str::from_utf8(&w[1..])
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                                .is_some_and(|v| v.is_ascii_control())
                    });
                prop_assert!(decoded_has_ctl, "{raw:?} refused");
            }
            Ok(c) => {
                prop_assert!(c.starts_with('/'), "{c:?}");
                if matches!(c, Cow::Owned(_)) {
                    prop_assert!(!c.contains("//"), "{raw:?} -> {c:?}");
                    prop_assert!(!c.split('/').any(|s| s == "." || s == ".."), "{raw:?} -> {c:?}");
                    prop_assert!(!c.contains(['\\', ';']), "{raw:?} -> {c:?}");
                }
                // Canonical is a fixed point (decoding an already decoded `%` aside).
                if !c.contains('%') {
                    let again = canonical_path(&c).expect("a canonical path is acceptable");
                    prop_assert_eq!(again.as_ref(), c.as_ref());
                }
            }
        }
    }

    #[test]
    fn hosts_never_panic(raw in "\\PC{0,40}") {
        if valid_host(&raw) {
            prop_assert!(raw.is_ascii() && !raw.contains([' ', '/', '@', '?', '#']), "{raw:?}");
        }
    }

    #[test]
    fn return_paths_never_leave_the_site(raw in "[/\\\\\t\n\r a-z.:%]{0,12}") {
        if safe_return_path(&raw) {
            // What a browser makes of it: tabs and newlines dropped, `\` read as `/`.
            let seen: String = raw.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
            let seen = seen.replace('\\', "/");
            prop_assert!(seen.starts_with('/') && !seen.starts_with("//"), "{raw:?} -> {seen:?}");
        }
    }

    #[test]
    fn escaped_html_has_no_markup(raw in "\\PC{0,80}") {
        let out = escape_html(&raw);
        prop_assert!(!out.contains(['<', '>', '"', '\'']), "{out}");
        for (i, _) in out.match_indices('&') {
            let rest = &out[i..];
            prop_assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| rest.starts_with(e)),
                "{out}"
            );
        }
    }
}
