"""edge-filter: a weft http filter in Python (world `weft:plugin/http-filter`), the same
behaviour as guests/js/edge-filter, run by the tests in weft's filter proxy and, after
`weft adapt`, in Envoy.

- `/deny…`: a local 403 `{"error":"denied"}` (the upstream is not called), a log line;
- everything else goes upstream with `x-edge-lang: python`;
- a `text/plain` request body is buffered and every digit in it replaced by `#` (its
  content-length follows);
- the response gets `x-edge-served-by: <lang>`;
- counted in the metric `edge_requests{outcome=denied|passed|masked}`.

Configuration: `{"lang": "<name>"}` (default "python") is what `x-edge-lang` says.
The `http-stream` resource is the class `HttpStream` in `filter.py` (componentize-py looks for an
exported resource in a module named after its interface).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config
from wit_world.imports.types import Error_InvalidConfig

# Set by `init`; read by filter.py.
lang = "python"


class Lifecycle(exports.Lifecycle):
    def init(self) -> None:
        global lang
        cfg = json.loads(config.get_json() or "{}")
        unknown = sorted(set(cfg) - {"lang"})
        if unknown:
            raise Err(Error_InvalidConfig(f"edge-filter: unknown key(s) {', '.join(unknown)}"))
        if "lang" in cfg:
            if not isinstance(cfg["lang"], str) or not cfg["lang"]:
                raise Err(Error_InvalidConfig("edge-filter: 'lang' must be a non-empty string"))
            lang = cfg["lang"]


class Filter(exports.Filter):
    def on_tick(self) -> None:
        pass

    def on_http_call_response(self, token: int, status: int, body: bytes) -> None:
        pass
