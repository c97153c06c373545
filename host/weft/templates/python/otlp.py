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

{{lifecycle}}

def _tag(attributes):
    """The attributes with `tagged.by` set (replacing one already there)."""
    kept = [kv for kv in attributes if kv.key != KEY]
    kept.append(KeyValue(KEY, Value_Str(value)))
    return kept


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
