"""The `http-stream` resource of ab-router (see app.py): one instance per request."""

from wit_world.exports import filter as wit_filter
from wit_world.exports.filter import Action_Continue
from wit_world.imports import http, metrics

import app

REQ = http.HeaderMap.REQUEST_HEADERS
CONTINUE = Action_Continue()


class HttpStream(wit_filter.HttpStream):
    def __init__(self) -> None:
        pass

    def on_request_headers(self, header_count: int, end_of_stream: bool):
        version = app.choose(http.get_header(REQ, app.header))
        http.set_header(REQ, app.target, version)
        metrics.counter_add("ab_requests", [("version", version)], 1)
        return CONTINUE

    def on_request_body(self, body_size: int, end_of_stream: bool):
        return CONTINUE

    def on_request_trailers(self, trailer_count: int):
        return CONTINUE

    def on_response_headers(self, header_count: int, end_of_stream: bool):
        return CONTINUE

    def on_response_body(self, body_size: int, end_of_stream: bool):
        return CONTINUE

    def on_response_trailers(self, trailer_count: int):
        return CONTINUE

    def on_done(self) -> None:
        pass
