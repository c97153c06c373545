"""{{name}}: a weft plugin in Python (world `weft:plugin/{{world}}`).

Sets the string attribute `tagged.by` to the configured `value` on every span and log record
the world passes. Configuration: `{"value": "<text>"}` (default "{{name}}"); any other key fails
the load with `error.invalid-config`.

The classes below implement the world's exports; componentize-py finds them by name in this
module. See the bindings with `componentize-py -d wit -w {{world}} bindings bindings/`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log
from wit_world.imports.types import Error_InvalidConfig, KeyValue, Value_Str

KEY = "tagged.by"

# Set by `init`, which runs once per instance before any batch.
_value = "{{name}}"


def _invalid(message: str) -> Err:
    return Err(Error_InvalidConfig("{{name}}: " + message))


def _tag(attributes):
    """The attributes with `tagged.by` set (replacing one already there)."""
    kept = [kv for kv in attributes if kv.key != KEY]
    kept.append(KeyValue(KEY, Value_Str(_value)))
    return kept


class Lifecycle(exports.Lifecycle):
    def init(self) -> None:
        global _value
        try:
            cfg = json.loads(config.get_json() or "{}")
        except ValueError as e:
            raise _invalid(f"configuration is not JSON: {e}")
        if not isinstance(cfg, dict):
            raise _invalid("configuration must be a JSON object")
        unknown = sorted(set(cfg) - {"value"})
        if unknown:
            raise _invalid(f"unknown key(s) {', '.join(map(repr, unknown))}; expected only 'value'")
        value = cfg.get("value", "{{name}}")
        if not isinstance(value, str) or not value:
            raise _invalid("'value' must be a non-empty string")
        _value = value


# <spans>
class Spans(exports.Spans):
    def process_spans(self, batch):
        for span in batch.spans:
            span.attributes = _tag(span.attributes)
        return batch


# </spans>
# <logs>
class Logs(exports.Logs):
    def process_logs(self, batch):
        for record in batch.records:
            record.attributes = _tag(record.attributes)
        return batch


# </logs>
