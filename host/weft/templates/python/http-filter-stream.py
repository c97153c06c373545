"""The `http-stream` resource of the exported interface `filter`, one instance per request:
componentize-py looks for it in a module named after the interface (this file)."""

from wit_world.exports import filter as wit_filter
from wit_world.exports.filter import Action_Continue, Action_Respond, LocalResponse
from wit_world.imports import http, log, metrics

import app


class HttpStream(wit_filter.HttpStream):
    """One request/response exchange."""

    def __init__(self) -> None:
        pass

    def on_request_headers(self, header_count: int, end_of_stream: bool):
        path = (http.get_property(["request", "path"]) or b"").decode()
        if path.startswith("/deny"):
            metrics.counter_add("{{crate}}_requests", [("outcome", "denied")], 1)
            log.log(log.Level.INFO, f"{{name}}: denied {path}")
            return Action_Respond(
                LocalResponse(
                    403,
                    [("content-type", "application/json")],
                    b'{"error":"denied"}',
                    "{{crate}}_denied",
                )
            )
        http.set_header(http.HeaderMap.REQUEST_HEADERS, "x-tagged-by", app.value)
        metrics.counter_add("{{crate}}_requests", [("outcome", "tagged")], 1)
        return Action_Continue()

    def on_request_body(self, body_size: int, end_of_stream: bool):
        return Action_Continue()

    def on_request_trailers(self, trailer_count: int):
        return Action_Continue()

    def on_response_headers(self, header_count: int, end_of_stream: bool):
        return Action_Continue()

    def on_response_body(self, body_size: int, end_of_stream: bool):
        return Action_Continue()

    def on_response_trailers(self, trailer_count: int):
        return Action_Continue()

    def on_done(self) -> None:
        pass
