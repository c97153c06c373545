use serde::Deserialize;
use weft_guest::{Config, Error, Plugin};

/// The configuration: `{"value": "<text>"}` (`value` defaults to `"{{name}}"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_value")]
    value: String,
}

fn default_value() -> String {
    "{{name}}".into()
}

/// The plugin: one value per instance, read from the configuration once.
pub struct Tagger {
    value: String,
}

impl Plugin for Tagger {
    fn new(config: &Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if settings.value.is_empty() {
            return Err(Error::InvalidConfig("`value` must not be empty".into()));
        }
        Ok(Tagger {
            value: settings.value,
        })
    }
}
