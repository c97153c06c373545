"""tagger: a weft span processor written in Python, on the typed-records world.

World `typed-span-processor` (weft:plugin@0.2.0): `init` reads the JSON configuration through
the `config` import and validates it; `process-spans` sets the string attribute
`tagged.by` = <value> on every span of the batch (replacing an existing one) and logs one line
through the `log` import.

Configuration: `{"value": "<string>"}`; `value` defaults to `"python"`. Any other key, or a
`value` that is not a non-empty string, fails the load with `error.invalid-config`.

Build (from this directory, with componentize-py 0.25.1 from tests/peers/requirements-guests.txt):

    componentize-py -d ../../../wit -w typed-span-processor componentize app -o tagger.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log
from wit_world.imports.types import (
    Error_InvalidConfig,
    KeyValue,
    SpanBatch,
    Value_Str,
)

KEY = "tagged.by"
ALLOWED = {"value"}

# Set by `init`; each instance runs `init` once before any `process_spans` call.
_value = "python"


def _invalid(message: str) -> Err:
    return Err(Error_InvalidConfig("tagger: " + message))


class Lifecycle(exports.Lifecycle):
    def init(self) -> None:
        global _value
        try:
            cfg = json.loads(config.get_json())
        except ValueError as e:
            raise _invalid(f"configuration is not JSON: {e}")
        if not isinstance(cfg, dict):
            raise _invalid("configuration must be a JSON object")
        unknown = sorted(set(cfg) - ALLOWED)
        if unknown:
            raise _invalid(
                f"unknown key(s) {', '.join(repr(k) for k in unknown)}; expected only 'value'"
            )
        value = cfg.get("value", "python")
        if not isinstance(value, str) or not value:
            raise _invalid("'value' must be a non-empty string")
        _value = value
        log.log(log.Level.INFO, f"tagger: tagging spans with {KEY}={_value}")


class Spans(exports.Spans):
    def process_spans(self, batch: SpanBatch) -> SpanBatch:
        for span in batch.spans:
            span.attributes = [kv for kv in span.attributes if kv.key != KEY]
            span.attributes.append(KeyValue(KEY, Value_Str(_value)))
        log.log(
            log.Level.INFO,
            f"tagger: tagged {len(batch.spans)} span(s) of scope '{batch.scope.name}'",
        )
        return batch
