//! Property-based fuzzing (proptest; `cargo fuzz` needs a nightly
//! toolchain) of the domain parsers that face client input: SKU codes,
//! currencies and prices. Each property runs a bounded number of cases
//! (`SKUWATCH_FUZZ_CASES`, default 1000) on inputs of bounded size: no panic,
//! no hang, and round trips where they exist.

use proptest::prelude::*;
use skuwatch_actors::domain::{recovery_level, Currency, Money, SkuCode};

fn config() -> ProptestConfig {
    let cases = std::env::var("SKUWATCH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Currencies with 0, 2 and 3 minor-unit digits.
fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(vec!["JPY", "GBP", "USD", "EUR", "KWD", "BHD", "CLP"])
        .prop_map(|code| Currency::parse(code).expect("a known currency"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sku_code_parse_never_panics_and_keeps_its_rules(raw in ".{0,80}") {
        if let Ok(code) = SkuCode::parse(&raw) {
            prop_assert_eq!(code.as_str(), raw.as_str());
            let chars = raw.chars().count();
            prop_assert!((1..=SkuCode::MAX_CHARS).contains(&chars));
            prop_assert!(!raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/'));
            prop_assert!(raw != "." && raw != "..");
            // Round trip through JSON, the way the API carries codes.
            let json = serde_json::to_string(&code).expect("serialize");
            let back: SkuCode = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(back, code);
        }
    }

    #[test]
    fn sku_codes_of_visible_characters_are_accepted(raw in "[!-.0-~]{1,64}") {
        prop_assume!(raw != "." && raw != "..");
        prop_assert!(SkuCode::parse(&raw).is_ok(), "{:?}", raw);
    }

    #[test]
    fn currency_parse_never_panics(raw in ".{0,8}") {
        let _ = Currency::parse(&raw);
    }

    #[test]
    fn money_parse_never_panics(raw in ".{0,40}", currency in currency()) {
        let _ = Money::parse(&raw, currency);
        let _ = Money::parse_json(&raw, currency);
    }

    #[test]
    fn decimal_looking_text_never_panics(
        raw in "-?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,5})?",
        currency in currency(),
    ) {
        if let Ok(money) = Money::parse(&raw, currency) {
            // Accepted text means exactly that amount: same digits back.
            let again = Money::parse(&money.to_decimal_string(), currency).expect("own output");
            prop_assert_eq!(again, money);
        }
        let _ = Money::parse_json(&raw, currency);
    }

    #[test]
    fn minor_units_round_trip_through_text_and_json(minor in any::<i64>(), currency in currency()) {
        let money = Money { minor, currency };
        let text = money.to_decimal_string();
        match Money::parse(&text, currency) {
            Ok(back) => prop_assert_eq!(back, money),
            // The only refusal: past i64 after scaling, which to_decimal_string
            // cannot produce from an i64 — so there must be none.
            Err(e) => prop_assert!(false, "{} refused: {}", text, e),
        }
        let quoted = serde_json::to_string(&text).expect("json string");
        prop_assert_eq!(Money::parse_json(&quoted, currency).expect("json string"), money);
        prop_assert_eq!(Money::parse_json(&text, currency).expect("json number"), money);
    }

    #[test]
    fn more_decimals_than_the_currency_has_are_refused(
        whole in 0u32..1_000_000,
        extra in "[0-9]{4}",
        currency in currency(),
    ) {
        // One digit more than the currency's minor unit, even if zero.
        let places = currency.exponent() as usize + 1;
        let text = format!("{whole}.{}", &extra[..places]);
        prop_assert!(Money::parse(&text, currency).is_err(), "{}", text);
    }

    #[test]
    fn the_low_stock_recovery_level_never_overflows(threshold in 0i64..=i64::MAX) {
        let level = recovery_level(threshold);
        prop_assert!(level > threshold || threshold == i64::MAX);
    }
}
