//! Enriches the resources of `fixtures/traces.json`, the fixture the README shows, so the
//! README's before/after stays true.

use guest_cloud_enrich::{CloudConfig, Enricher};
use serde_json::Value as Json;
use weft_guest::{Config, KeyValue, Resource, Value};

/// The resources of the fixture's `resourceSpans`, with their string attributes.
fn resources() -> Vec<Resource> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/traces.json"))
            .expect("fixture");
    let doc: Json = serde_json::from_str(&text).expect("fixture is JSON");
    doc["resourceSpans"]
        .as_array()
        .expect("resourceSpans")
        .iter()
        .map(|rs| Resource {
            attributes: rs["resource"]["attributes"]
                .as_array()
                .expect("attributes")
                .iter()
                .map(|kv| KeyValue {
                    key: kv["key"].as_str().unwrap_or_default().to_string(),
                    value: Value::Str(
                        kv["value"]["stringValue"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                })
                .collect(),
            dropped_attributes_count: 0,
            schema_url: String::new(),
        })
        .collect()
}

fn enriched(config: &str) -> Vec<Vec<(String, String)>> {
    let config: CloudConfig = Config::from_json(config)
        .and_then(|c| c.parse())
        .expect("config");
    let enricher = Enricher::from_config(&config).expect("config");
    resources()
        .into_iter()
        .map(|mut r| {
            enricher.enrich(&mut r);
            r.attributes
                .into_iter()
                .map(|kv| (kv.key, kv.value.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const README_CONFIG: &str = r#"{"provider": "aws", "platform": "aws_ec2", "region": "eu-west-1",
    "host_name": "ip-10-0-3-17", "extra": {"deployment.environment.name": "prod"}}"#;

#[test]
fn the_readme_example_adds_what_it_says() {
    let out = enriched(README_CONFIG);
    assert_eq!(
        out[0],
        pairs(&[
            ("service.name", "checkout"),
            ("host.name", "checkout-7d9f"),
            ("cloud.provider", "aws"),
            ("cloud.platform", "aws_ec2"),
            ("cloud.region", "eu-west-1"),
            ("deployment.environment.name", "prod"),
        ])
    );
    assert_eq!(
        out[1],
        pairs(&[
            ("service.name", "ledger"),
            ("cloud.region", "us-east-1"),
            ("cloud.provider", "aws"),
            ("cloud.platform", "aws_ec2"),
            ("host.name", "ip-10-0-3-17"),
            ("deployment.environment.name", "prod"),
        ])
    );
}

#[test]
fn the_readme_overwrite_example_replaces_in_place() {
    let config = README_CONFIG.replacen('{', r#"{"overwrite": true, "#, 1);
    let out = enriched(&config);
    assert_eq!(out[0][1], ("host.name".into(), "ip-10-0-3-17".into()));
    assert_eq!(out[1][1], ("cloud.region".into(), "eu-west-1".into()));
    assert_eq!(out[0].len(), 6);
    assert_eq!(out[1].len(), 6);
}
