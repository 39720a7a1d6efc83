//! The JSON Schema in `schema/` and the parser agree on every example in `schema/examples.json`.
//!
//! Each example states both verdicts. Where they differ the parser must be the stricter one,
//! and only for the rules the schema says it cannot express (listed in its description).

use std::path::PathBuf;

use churnwatch_core::money::{CurrencyCode, FxTable};
use churnwatch_core::{ParseConfig, RejectCode, Timestamp, parse_event};
use serde_json::Value;

/// Rejections that depend on the receiver's configuration or clock, or on ISO 4217 tables.
const PARSER_ONLY: [RejectCode; 4] = [
    RejectCode::UnknownCurrency,
    RejectCode::UnsupportedCurrency,
    RejectCode::BadAmount,
    RejectCode::TooFarInFuture,
];

fn repo_file(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn schema_and_parser_agree_on_every_example() {
    let schema = repo_file("schema/input-event.schema.json");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let examples = repo_file("schema/examples.json");
    let now = Timestamp::parse_rfc3339("2025-06-15T00:00:00Z").unwrap();
    let fx = FxTable::parse_rates(CurrencyCode::default(), "EUR=1.10,JPY=0.0067").unwrap();
    let config = ParseConfig {
        fx,
        ..ParseConfig::default()
    };

    let examples = examples.as_array().expect("examples is an array");
    assert!(examples.len() >= 20);
    let mut seen_codes = std::collections::BTreeSet::new();
    for ex in examples {
        let name = ex["name"].as_str().unwrap();
        let (bytes, instance) = match (&ex["raw"], &ex["event"]) {
            (Value::String(raw), _) => (
                raw.clone().into_bytes(),
                serde_json::from_str::<Value>(raw).ok(),
            ),
            (_, event) => (serde_json::to_vec(event).unwrap(), Some(event.clone())),
        };
        let schema_accepts = instance.as_ref().is_some_and(|i| validator.is_valid(i));
        let parsed = parse_event(&bytes, now, &config);

        let expected_schema = ex["schema"].as_str().unwrap() == "accept";
        assert_eq!(schema_accepts, expected_schema, "{name}: schema verdict");
        match (ex["parser"].as_str().unwrap(), &parsed) {
            ("accept", Ok(_)) => {}
            ("accept", Err(r)) => panic!("{name}: parser rejected it: {r}"),
            (code, Ok(_)) => panic!("{name}: parser accepted it, expected {code}"),
            (code, Err(r)) => {
                assert_eq!(r.code.as_str(), code, "{name}: {r}");
                seen_codes.insert(r.code);
            }
        }
        // Agreement: what the parser accepts the schema accepts; where the schema accepts and
        // the parser rejects, it is one of the parser-only rules.
        if parsed.is_ok() {
            assert!(
                schema_accepts,
                "{name}: parser accepts what the schema rejects"
            );
        }
        if let (true, Err(r)) = (schema_accepts, &parsed) {
            assert!(
                PARSER_ONLY.contains(&r.code) || r.message.contains("1990"),
                "{name}: schema should reject {}",
                r.code
            );
        }
    }
    // Every reason code but the size limit is exemplified.
    for code in RejectCode::ALL {
        assert!(
            code == RejectCode::TooLarge || seen_codes.contains(&code),
            "no example for {code}"
        );
    }
}
