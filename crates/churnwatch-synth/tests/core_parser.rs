//! Every generated line meets the real parser: real events are accepted (with the generator's
//! exchange rates configured), and each malformed line is rejected with the reason it was
//! labelled with.

use churnwatch_core::money::{CurrencyCode, FxTable};
use churnwatch_core::{ParseConfig, Timestamp, parse_event};
use churnwatch_synth::{FX_RATES_TO_USD, LineKind, SynthConfig, generate};

#[test]
fn the_core_parser_accepts_real_lines_and_rejects_malformed_ones_with_their_label() {
    let config = SynthConfig {
        malformed_rate: 0.05,
        duplicate_rate: 0.02,
        ..SynthConfig::new(800, 24, 3)
    };
    let data = generate(&config).unwrap();
    let fx = FxTable::parse_rates(CurrencyCode::default(), FX_RATES_TO_USD).unwrap();
    let parse = ParseConfig {
        fx,
        ..ParseConfig::default()
    };
    let now = Timestamp(data.end().unix_timestamp());
    let (mut accepted, mut rejected) = (0, 0);
    for event in data.events() {
        let line = event.to_json_line();
        let result = parse_event(line.as_bytes(), now, &parse);
        match event.line_kind() {
            LineKind::Malformed(kind) => {
                let rejection = result.expect_err(&line);
                assert_eq!(rejection.code.as_str(), kind.reason_code(), "{line}");
                rejected += 1;
            }
            LineKind::Event | LineKind::Duplicate => {
                let parsed = result.unwrap_or_else(|r| panic!("{line}: {r}"));
                assert_eq!(parsed.event_id, event.event_id());
                assert_eq!(parsed.customer_id, event.customer_id());
                accepted += 1;
            }
        }
    }
    assert!(
        accepted > 10_000 && rejected > 300,
        "{accepted} accepted, {rejected} rejected"
    );
}
