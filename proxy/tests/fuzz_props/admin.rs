//! Admin API bodies and feedback.

use super::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::String),
        (0usize..3000).prop_map(|n| Value::String("m".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let fields = &[
            "new_users_per_minute",
            "total_active_users",
            "paused",
            "queue_all",
            "drain",
            "sold_out",
            "message",
        ];
        let key = prop_oneof![7 => word(fields), 1 => "[a-z_]{0,12}"];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_patch(v: &Value) -> Result<(), TestCaseError> {
    let mut o = Overrides::default();
    match apply_patch(&mut o, v) {
        Ok(()) => {
            prop_assert!(o.new_users_per_minute.is_none_or(|n| n > 0));
            prop_assert!(o.total_active_users.is_none_or(|n| n > 0));
            prop_assert!(o.message.as_ref().is_none_or(|m| m.len() <= 1024));
        }
        Err(PatchError::NotAnObject) => prop_assert!(!v.is_object()),
        Err(PatchError::Field { key, why }) => {
            let keys: Vec<&String> = v
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            prop_assert!(
                keys.contains(&&key),
                "names the field at fault: {key}: {why}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn admin_patches_never_panic(v in json_value()) {
        check_patch(&v)?;
    }

    #[test]
    fn admin_patch_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            check_patch(&v)?;
        }
    }

    #[test]
    fn feedback_never_panics_and_publishes_clean_text(
        json in any::<bool>(),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            ("\\PC{0,8}", "\\PC{0,600}").prop_map(|(r, c)| {
                format!("rating={}&comment={}", percent_encode(&r), percent_encode(&c)).into_bytes()
            }),
            (any::<i64>(), "\\PC{0,600}").prop_map(|(r, c)| {
                serde_json::json!({"rating": r, "comment": c}).to_string().into_bytes()
            }),
            ("[1-5]", "[A-Za-z0-9_-]{30,60}").prop_map(|(r, tok)| {
                format!("rating={r}&comment=my+token+{tok}+oops").into_bytes()
            }),
        ],
    ) {
        let ctype = json.then_some("application/json; charset=utf-8");
        if let Ok(EventKind::Feedback { rating, comment }) = parse_feedback(ctype, &body) {
            prop_assert!((1..=5).contains(&rating.get()));
            if let Some(c) = comment {
                let c = c.as_str();
                prop_assert!(!c.is_empty() && c.chars().count() <= 500);
                prop_assert!(!c.chars().any(char::is_control), "{c:?}");
                prop_assert_eq!(c.trim(), c);
                // No token-shaped run survives (pasted cookies never reach the stream).
                let longest = c
                    .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
                    .map(str::len)
                    .max()
                    .unwrap_or(0);
                prop_assert!(longest < 32, "{c:?}");
            }
        }
    }
}
