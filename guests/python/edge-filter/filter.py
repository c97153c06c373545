"""The `http-stream` resource of edge-filter (see app.py): one instance per request."""

import re

from wit_world.exports import filter as wit_filter
from wit_world.exports.filter import Action_Continue, Action_Pause, Action_Respond, LocalResponse
from wit_world.imports import http, log, metrics

import app

DIGIT = re.compile(r"[0-9]")
REQ = http.HeaderMap.REQUEST_HEADERS


def count(outcome: str) -> None:
    metrics.counter_add("edge_requests", [("outcome", outcome)], 1)


class HttpStream(wit_filter.HttpStream):
    def __init__(self) -> None:
        self.buffering = False

    def on_request_headers(self, header_count: int, end_of_stream: bool):
        path = (http.get_property(["request", "path"]) or b"").decode()
        if path.startswith("/deny"):
            count("denied")
            log.log(log.Level.INFO, f"edge-filter: denied {path}")
            return Action_Respond(
                LocalResponse(
                    403,
                    [("content-type", "application/json")],
                    b'{"error":"denied"}',
                    "edge_filter_denied",
                )
            )
        http.set_header(REQ, "x-edge-lang", app.lang)
        count("passed")
        content_type = http.get_header(REQ, "content-type") or ""
        if not end_of_stream and content_type.startswith("text/plain"):
            self.buffering = True
            return Action_Pause()
        return Action_Continue()

    def on_request_body(self, body_size: int, end_of_stream: bool):
        if not self.buffering:
            return Action_Continue()
        if not end_of_stream:
            return Action_Pause()
        self.buffering = False
        text = http.get_body(http.Body.REQUEST, 0, body_size).decode("utf-8", "replace")
        masked = DIGIT.sub("#", text)
        if masked != text:
            data = masked.encode()
            http.replace_body(http.Body.REQUEST, 0, body_size, data)
            if http.get_header(REQ, "content-length") is not None:
                http.set_header(REQ, "content-length", str(len(data)))
            count("masked")
        return Action_Continue()

    def on_request_trailers(self, trailer_count: int):
        return Action_Continue()

    def on_response_headers(self, header_count: int, end_of_stream: bool):
        http.set_header(http.HeaderMap.RESPONSE_HEADERS, "x-edge-served-by", app.lang)
        return Action_Continue()

    def on_response_body(self, body_size: int, end_of_stream: bool):
        return Action_Continue()

    def on_response_trailers(self, trailer_count: int):
        return Action_Continue()

    def on_done(self) -> None:
        pass
