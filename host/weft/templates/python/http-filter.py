"""{{name}}: a weft HTTP filter in Python (world `weft:plugin/http-filter`): runs in weft's
filter proxy and, after `weft adapt`, in Envoy.

A request whose path starts with `/deny` gets a local 403 with a JSON body (the upstream is not
called) and a log line; every other request goes upstream with `x-tagged-by: <value>`. Both are
counted in the metric `{{crate}}_requests{outcome}`. Configuration: `{"value": "<text>"}`
(default "{{name}}"); any other key fails the load with `error.invalid-config`.

The `http-stream` resource (one per request) is the class `HttpStream` in `filter.py`:
componentize-py looks for an exported resource in a module named after its interface. See the
bindings with `componentize-py -d wit -w http-filter bindings bindings/`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config
from wit_world.imports.types import Error_InvalidConfig

{{lifecycle}}

class Filter(exports.Filter):
    def on_tick(self) -> None:
        pass

    def on_http_call_response(self, token: int, status: int, body: bytes) -> None:
        pass
