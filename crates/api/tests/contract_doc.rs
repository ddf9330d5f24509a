//! docs/operator.md describes the sidecar and Job API as the code has it: its "JSON bodies" are
//! what `api::wire::document` generates from the contract types, and its route table names every
//! route of `api::wire::ROUTES`. Fix a failure with `cargo run -p api --bin contractgen`.

const PAGE: &str = include_str!("../../../docs/operator.md");

#[test]
fn the_generated_json_bodies_match_the_contract_types() {
    let expected = api::wire::with_document(PAGE).expect("docs/operator.md has the generated section's markers");
    assert!(
        expected == PAGE,
        "docs/operator.md drifted from crates/api/src/wire.rs: run `cargo run -p api --bin contractgen`"
    );
}

#[test]
fn the_route_table_lists_every_route_with_its_audience() {
    for route in api::wire::ROUTES {
        let audience = route.audience.rsplit('/').next().unwrap();
        let row = format!("| `{} {}", route.method.as_str(), route.path);
        let line = PAGE.lines().find(|l| l.starts_with(&row)).unwrap_or_else(|| panic!("no table row {row}"));
        assert!(line.contains(&format!("| {audience} |")), "{line}: audience {audience}");
    }
}
