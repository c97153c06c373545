//! Adds cloud and host resource attributes, from configuration, to spans and log records.
//!
//! An SDK inside a VM or container often cannot tell which account, region or zone it runs in,
//! but the operator deploying the pipeline knows: this plugin stamps those facts on the resource
//! of every batch, under their OpenTelemetry semantic-convention names (`cloud.provider`,
//! `cloud.region`, `host.name`, ...), plus any free-form `extra` attributes.
//!
//! By default values the sender already set win (`overwrite: false`): a resource detector in the
//! SDK knows better than a static configuration. The same enrichment applies to traces and logs.

use std::collections::BTreeMap;

use serde::Deserialize;
use weft_guest::view::{Logs, Traces};
use weft_guest::{
    AnyValue, AttributesExt, Config, Edits, Error, HasAttributes, LogTransform, Plugin, Resource,
    ResourceGroup, SpanProcessor, Value,
};

/// The `cloud.provider` values of the OpenTelemetry semantic conventions.
pub const PROVIDERS: [&str; 8] = [
    "alibaba_cloud",
    "aws",
    "azure",
    "gcp",
    "heroku",
    "ibm_cloud",
    "oracle_cloud",
    "tencent_cloud",
];

/// The plugin's configuration. Every attribute is optional, but at least one must be given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// `cloud.provider`: one of [`PROVIDERS`].
    #[serde(default)]
    pub provider: Option<String>,
    /// `cloud.platform`, e.g. `aws_ec2`, `gcp_kubernetes_engine`.
    #[serde(default)]
    pub platform: Option<String>,
    /// `cloud.region`, e.g. `eu-west-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// `cloud.availability_zone`, e.g. `eu-west-1a`.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// `cloud.account.id`.
    #[serde(default)]
    pub account_id: Option<String>,
    /// `host.name`.
    #[serde(default)]
    pub host_name: Option<String>,
    /// `host.id`, e.g. an instance id.
    #[serde(default)]
    pub host_id: Option<String>,
    /// `host.type`, e.g. a machine type.
    #[serde(default)]
    pub host_type: Option<String>,
    /// Free-form attributes: key to a JSON string, number or boolean.
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Replace values the resource already has (default false: keep them).
    #[serde(default)]
    pub overwrite: bool,
}

/// The validated enrichment: attributes to add, in a fixed order, and the overwrite policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Enricher {
    attributes: Vec<(String, Value)>,
    overwrite: bool,
}

/// Shorthand for a configuration error with the plugin's name in front.
fn invalid(message: String) -> Error {
    Error::InvalidConfig(format!("cloud-enrich: {message}"))
}

/// Converts an `extra` value to an attribute value; only scalars make sense on a resource.
fn extra_value(key: &str, value: &serde_json::Value) -> Result<Value, Error> {
    match value {
        serde_json::Value::String(s) => Ok(Value::Str(s.clone())),
        serde_json::Value::Bool(b) => Ok(Value::Boolean(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Value::Int(i)),
            // Integers beyond i64 and fractions become doubles, as OTLP has no other number.
            None => n
                .as_f64()
                .map(Value::Double)
                .ok_or_else(|| invalid(format!("`extra.{key}` is not a representable number"))),
        },
        _ => Err(invalid(format!(
            "`extra.{key}` must be a string, number or boolean"
        ))),
    }
}

impl Enricher {
    /// Validates a configuration: a known provider, no empty values, no key set twice, and at
    /// least one attribute.
    pub fn from_config(config: &CloudConfig) -> Result<Self, Error> {
        if let Some(provider) = &config.provider
            && !PROVIDERS.contains(&provider.as_str())
        {
            return Err(invalid(format!(
                "unknown `provider` `{provider}`: expected one of {}",
                PROVIDERS.join(", ")
            )));
        }
        let named = [
            ("provider", "cloud.provider", &config.provider),
            ("platform", "cloud.platform", &config.platform),
            ("region", "cloud.region", &config.region),
            (
                "availability_zone",
                "cloud.availability_zone",
                &config.availability_zone,
            ),
            ("account_id", "cloud.account.id", &config.account_id),
            ("host_name", "host.name", &config.host_name),
            ("host_id", "host.id", &config.host_id),
            ("host_type", "host.type", &config.host_type),
        ];
        let mut attributes: Vec<(String, Value)> = Vec::new();
        for (option, key, value) in named {
            if let Some(value) = value {
                // An empty value is almost always an unset environment variable in a template.
                if value.trim().is_empty() {
                    return Err(invalid(format!("`{option}` is empty")));
                }
                attributes.push((key.to_string(), Value::Str(value.clone())));
            }
        }
        for (key, value) in &config.extra {
            if key.is_empty() {
                return Err(invalid("`extra` has an empty key".to_string()));
            }
            // Two sources for one key would make the result depend on the order of application.
            if attributes.iter().any(|(k, _)| k == key) {
                return Err(invalid(format!(
                    "`extra.{key}` is also set by a named option: set it once"
                )));
            }
            attributes.push((key.clone(), extra_value(key, value)?));
        }
        if attributes.is_empty() {
            return Err(invalid(
                "nothing to add: set at least one of provider, platform, region, \
                 availability_zone, account_id, host_name, host_id, host_type, extra"
                    .to_string(),
            ));
        }
        Ok(Enricher {
            attributes,
            overwrite: config.overwrite,
        })
    }

    /// The attributes this enricher adds, in order.
    pub fn attributes(&self) -> &[(String, Value)] {
        &self.attributes
    }

    /// Adds the configured attributes to the resource of a request's resource group (batch ABI):
    /// the spans or records are not read at all. Returns how many it set.
    pub fn enrich_group<'a, G: ResourceGroup<'a>>(&self, group: &G, edits: &mut Edits) -> usize {
        let resource = group.resource_view();
        let mut changed = 0;
        for (key, value) in &self.attributes {
            if self.overwrite || resource.attribute(key).is_none() {
                edits.set_resource_attribute(group, key, AnyValue::from(value.clone()));
                changed += 1;
            }
        }
        changed
    }

    /// Adds the configured attributes to `resource`; returns how many it set.
    pub fn enrich(&self, resource: &mut Resource) -> usize {
        let mut changed = 0;
        for (key, value) in &self.attributes {
            if self.overwrite {
                resource.attributes.set(key, value.clone());
                changed += 1;
            } else if resource.attributes.set_if_absent(key, value.clone()) {
                changed += 1;
            }
        }
        changed
    }
}

/// The `cloud-enrich` plugin, for traces and logs.
pub struct CloudEnrich {
    enricher: Enricher,
}

impl Plugin for CloudEnrich {
    fn new(config: &Config) -> Result<Self, Error> {
        let config: CloudConfig = config.parse()?;
        Ok(CloudEnrich {
            enricher: Enricher::from_config(&config)?,
        })
    }
}

impl SpanProcessor for CloudEnrich {
    fn process_spans(&mut self, traces: Traces<'_>, edits: &mut Edits) -> Result<(), Error> {
        for group in traces.resource_spans() {
            self.enricher.enrich_group(&group, edits);
        }
        Ok(())
    }
}

impl LogTransform for CloudEnrich {
    fn process_logs(&mut self, logs: Logs<'_>, edits: &mut Edits) -> Result<(), Error> {
        for group in logs.resource_logs() {
            self.enricher.enrich_group(&group, edits);
        }
        Ok(())
    }
}

weft_guest::export_otlp_processor!(CloudEnrich);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::KeyValue;

    fn enricher(json: &str) -> Result<Enricher, Error> {
        let config: CloudConfig = Config::from_json(json)?.parse()?;
        Enricher::from_config(&config)
    }

    fn resource(attrs: &[(&str, &str)]) -> Resource {
        Resource {
            attributes: attrs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).to_string(),
                    value: (*v).into(),
                })
                .collect(),
            dropped_attributes_count: 0,
            schema_url: String::new(),
        }
    }

    fn expect_invalid(json: &str) -> String {
        match enricher(json) {
            Err(Error::InvalidConfig(message)) => message,
            other => panic!("{json}: expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn adds_every_configured_attribute_under_its_semantic_convention_name() {
        let e = enricher(
            r#"{"provider": "aws", "platform": "aws_ec2", "region": "eu-west-1",
                "availability_zone": "eu-west-1a", "account_id": "123456789012",
                "host_name": "ip-10-0-0-1", "host_id": "i-0abc", "host_type": "m5.large",
                "extra": {"deployment.environment.name": "prod", "team.size": 4,
                          "spot": true, "cost.weight": 0.5}}"#,
        )
        .expect("valid");
        let mut r = resource(&[("service.name", "checkout")]);
        assert_eq!(e.enrich(&mut r), 12);
        for (key, value) in [
            ("service.name", "checkout"),
            ("cloud.provider", "aws"),
            ("cloud.platform", "aws_ec2"),
            ("cloud.region", "eu-west-1"),
            ("cloud.availability_zone", "eu-west-1a"),
            ("cloud.account.id", "123456789012"),
            ("host.name", "ip-10-0-0-1"),
            ("host.id", "i-0abc"),
            ("host.type", "m5.large"),
            ("deployment.environment.name", "prod"),
        ] {
            assert_eq!(r.attributes.get_str(key), Some(value), "{key}");
        }
        assert_eq!(r.attributes.get_value("team.size"), Some(&Value::Int(4)));
        assert_eq!(r.attributes.get_value("spot"), Some(&Value::Boolean(true)));
        assert_eq!(
            r.attributes.get_value("cost.weight"),
            Some(&Value::Double(0.5))
        );
        assert_eq!(r.attributes.len(), 13);
        // The service's own attribute stays first; added ones follow in a fixed order.
        assert_eq!(r.attributes[0].key, "service.name");
        assert_eq!(r.attributes[1].key, "cloud.provider");
    }

    #[test]
    fn existing_values_are_kept_without_overwrite() {
        let e = enricher(r#"{"region": "eu-west-1", "host_name": "configured"}"#).expect("valid");
        let mut r = resource(&[("cloud.region", "us-east-1")]);
        assert_eq!(e.enrich(&mut r), 1);
        assert_eq!(r.attributes.get_str("cloud.region"), Some("us-east-1"));
        assert_eq!(r.attributes.get_str("host.name"), Some("configured"));
        // Idempotent: a second pass adds nothing.
        assert_eq!(e.enrich(&mut r), 0);
        assert_eq!(r.attributes.len(), 2);
    }

    #[test]
    fn overwrite_replaces_existing_values_in_place() {
        let e = enricher(r#"{"region": "eu-west-1", "overwrite": true}"#).expect("valid");
        let mut r = resource(&[("cloud.region", "us-east-1"), ("service.name", "x")]);
        e.enrich(&mut r);
        assert_eq!(r.attributes.get_str("cloud.region"), Some("eu-west-1"));
        assert_eq!(r.attributes[0].key, "cloud.region", "replaced where it was");
        assert_eq!(r.attributes.len(), 2);
    }

    #[test]
    fn an_unknown_provider_is_rejected_with_the_valid_values() {
        let message = expect_invalid(r#"{"provider": "amazon"}"#);
        assert!(message.contains("amazon"), "{message}");
        for p in PROVIDERS {
            assert!(message.contains(p), "{message} lacks {p}");
        }
        for p in PROVIDERS {
            enricher(&format!(r#"{{"provider": "{p}"}}"#)).expect("known provider");
        }
    }

    #[test]
    fn configurations_that_add_nothing_or_are_malformed_are_rejected() {
        let message = expect_invalid("{}");
        assert!(message.contains("at least one"), "{message}");
        expect_invalid(r#"{"overwrite": true}"#);
        expect_invalid(r#"{"extra": {}}"#);
        expect_invalid(r#"{"region": ""}"#);
        expect_invalid(r#"{"regoin": "eu-west-1"}"#);
        expect_invalid(r#"{"region": 5}"#);
        expect_invalid(r#"{"extra": {"a": {"nested": 1}}}"#);
        expect_invalid(r#"{"extra": {"a": null}}"#);
        expect_invalid(r#"{"extra": {"a": [1]}}"#);
        expect_invalid(r#"{"extra": {"": "x"}}"#);
        let message = expect_invalid(r#"{"region": "a", "extra": {"cloud.region": "b"}}"#);
        assert!(message.contains("cloud.region"), "{message}");
        enricher(r#"{"extra": {"k8s.cluster.name": "blue"}}"#).expect("extra alone is enough");
    }

    #[test]
    fn the_plugin_enriches_span_and_log_batches() {
        let config = Config::from_json(r#"{"provider": "gcp"}"#).expect("json");
        let mut plugin = CloudEnrich::new(&config).expect("valid");
        let scope = weft_guest::Scope {
            name: String::new(),
            version: String::new(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            schema_url: String::new(),
        };
        // Through the batch ABI as the component runs it: encode, process, apply the edits.
        let request = weft_guest::records::encode_span_batches(&[weft_guest::SpanBatch {
            resource: resource(&[("cloud.region", "eu-west-1")]),
            scope: scope.clone(),
            spans: Vec::new(),
        }]);
        let mut edits = Edits::new();
        plugin
            .process_spans(Traces::new(&request), &mut edits)
            .expect("ok");
        let out = edits
            .apply(&request, weft_guest::wire_kind::TracesData)
            .expect("changed");
        let batches = weft_guest::records::span_batches(Traces::new(&out));
        let attrs = &batches[0].resource.attributes;
        assert_eq!(attrs.get_str("cloud.provider"), Some("gcp"));
        assert_eq!(attrs.get_str("cloud.region"), Some("eu-west-1"));

        // A logs request whose resource group has no resource gets one.
        let mut e = weft_guest::wire::Encoder::default();
        e.nested(1, |e| e.nested(2, |_| true));
        let request = e.buf;
        let mut edits = Edits::new();
        plugin
            .process_logs(Logs::new(&request), &mut edits)
            .expect("ok");
        let out = edits
            .apply(&request, weft_guest::wire_kind::LogsData)
            .expect("changed");
        let batches = weft_guest::records::log_batches(Logs::new(&out));
        assert_eq!(
            batches[0].resource.attributes.get_str("cloud.provider"),
            Some("gcp")
        );
    }
}
