#!/usr/bin/env python3
"""Send deterministic OTLP traces and logs with the real OpenTelemetry Python SDK.

A test peer for weft: it plays the part of an instrumented application. Spans
and log records carry PII (card number, China mobile number, e-mail) and a
unique ``test.id`` attribute, so a receiver-side check can tell that every item
arrived exactly once and that masking happened.

    send_otel.py --protocol grpc --endpoint 127.0.0.1:14317 --traces 30 --logs 30 --seed 1

* ``--traces N`` sends N spans, grouped in traces of ``--spans-per-trace``
  spans (a root and its children); every ``--error-every``-th span has status
  ERROR.
* ``--logs N`` sends N log records.
* Export uses BatchSpanProcessor / BatchLogRecordProcessor with the OTLP
  exporters (gRPC or HTTP/protobuf), gzip compression on by default.
* At the end: force_flush + shutdown, then a JSON summary on stdout (counts,
  test ids, trace ids). SDK diagnostics go to stderr.
* Exit status: 0 when every span and log record was exported successfully,
  1 when an export failed (or items were dropped), 2 on bad arguments.

Test ids and trace/span ids are derived from ``--seed`` alone, so two runs
with the same arguments send the same ids.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from typing import Sequence

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

# The PII that weft's pii-mask (and the collector's redaction config) must mask.
PII_CARD = "4111 1111 1111 1111"
PII_PHONE = "13812345678"
PII_EMAIL = "user@example.com"

SCOPE = "weft.tests.send_otel"


class SeededIdGenerator(IdGenerator):
    """Trace and span ids drawn from a seeded RNG (never zero)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"weft-ids-{seed}")
        self._lock = threading.Lock()

    def _draw(self, bits: int) -> int:
        with self._lock:
            while True:
                v = self._rng.getrandbits(bits)
                if v:
                    return v

    def generate_span_id(self) -> int:
        return self._draw(64)

    def generate_trace_id(self) -> int:
        return self._draw(128)


class _Tally:
    """Thread-safe count of exported / failed items and of export calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exported = 0
        self.failed = 0
        self.batches = 0
        self.errors: list[str] = []

    def add(self, n: int, ok: bool, err: str | None = None) -> None:
        with self.lock:
            self.batches += 1
            if ok:
                self.exported += n
            else:
                self.failed += n
                if err and len(self.errors) < 5:
                    self.errors.append(err)

    def as_dict(self) -> dict:
        return {
            "exported": self.exported,
            "failed": self.failed,
            "export_calls": self.batches,
            "export_errors": self.errors,
        }


class CountingSpanExporter(SpanExporter):
    """Delegates to a real exporter and records each batch's result."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.tally = _Tally()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - recorded and reported
            self.tally.add(len(spans), False, f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        ok = result == SpanExportResult.SUCCESS
        self.tally.add(len(spans), ok, None if ok else f"span export returned {result.name}")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingLogExporter(LogRecordExporter):
    """Delegates to a real exporter and records each batch's result."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.tally = _Tally()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.inner.export(batch)
        except Exception as exc:  # noqa: BLE001 - recorded and reported
            self.tally.add(len(batch), False, f"{type(exc).__name__}: {exc}")
            return LogRecordExportResult.FAILURE
        ok = result == LogRecordExportResult.SUCCESS
        self.tally.add(len(batch), ok, None if ok else f"log export returned {result.name}")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def make_exporters(protocol: str, endpoint: str, gzip: bool, timeout_s: float):
    """Return (span_exporter, log_exporter, resolved endpoints)."""
    if protocol == "grpc":
        from grpc import Compression as GrpcCompression

        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        target = endpoint
        insecure = True
        for scheme in ("http://", "https://"):
            if target.startswith(scheme):
                insecure = scheme == "http://"
                target = target[len(scheme):]
        target = target.rstrip("/")
        comp = GrpcCompression.Gzip if gzip else GrpcCompression.NoCompression
        spans = OTLPSpanExporter(endpoint=target, insecure=insecure, compression=comp, timeout=timeout_s)
        logs = OTLPLogExporter(endpoint=target, insecure=insecure, compression=comp, timeout=timeout_s)
        return spans, logs, {"traces": target, "logs": target}

    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = endpoint if "://" in endpoint else f"http://{endpoint}"
    base = base.rstrip("/")
    comp = HttpCompression.Gzip if gzip else HttpCompression.NoCompression
    urls = {"traces": f"{base}/v1/traces", "logs": f"{base}/v1/logs"}
    spans = OTLPSpanExporter(endpoint=urls["traces"], compression=comp, timeout=timeout_s)
    logs = OTLPLogExporter(endpoint=urls["logs"], compression=comp, timeout=timeout_s)
    return spans, logs, urls


def send_spans(provider: TracerProvider, n: int, per_trace: int, error_every: int, seed: int):
    """Emit n spans in traces of per_trace spans; return (test ids, trace ids, error count)."""
    tracer = provider.get_tracer(SCOPE)
    test_ids: list[str] = []
    trace_ids: list[str] = []
    errors = 0
    i = 0
    while i < n:
        size = min(per_trace, n - i)
        root = tracer.start_span(
            "checkout",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": "/checkout"},
        )
        trace_ids.append(format(root.get_span_context().trace_id, "032x"))
        spans = [root]
        ctx = trace.set_span_in_context(root)
        for k in range(1, size):
            spans.append(
                tracer.start_span(
                    f"charge-card-{k}", context=ctx, kind=SpanKind.CLIENT
                )
            )
        for span in spans:
            tid = f"s{seed}-span-{i:06d}"
            test_ids.append(tid)
            span.set_attribute("test.id", tid)
            span.set_attribute("test.seq", i)
            span.set_attribute("payment.card", PII_CARD)
            span.set_attribute("user.phone", PII_PHONE)
            span.set_attribute("user.email", PII_EMAIL)
            span.set_attribute(
                "note", f"customer {PII_EMAIL} paid with {PII_CARD}, callback {PII_PHONE}"
            )
            if error_every > 0 and (i + 1) % error_every == 0:
                span.set_status(Status(StatusCode.ERROR, f"card declined for {PII_CARD}"))
                errors += 1
            else:
                span.set_status(Status(StatusCode.OK))
            i += 1
        for span in reversed(spans):  # children end before their root
            span.end()
    return test_ids, trace_ids, errors


def send_logs(provider: LoggerProvider, n: int, error_every: int, seed: int):
    """Emit n log records; return (test ids, error count)."""
    logger = provider.get_logger(SCOPE)
    test_ids: list[str] = []
    errors = 0
    for i in range(n):
        tid = f"s{seed}-log-{i:06d}"
        test_ids.append(tid)
        is_error = error_every > 0 and (i + 1) % error_every == 0
        errors += int(is_error)
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.ERROR if is_error else SeverityNumber.INFO,
            severity_text="ERROR" if is_error else "INFO",
            body=(
                f"payment {'declined' if is_error else 'accepted'}: card {PII_CARD}, "
                f"phone {PII_PHONE}, email {PII_EMAIL} ({tid})"
            ),
            attributes={
                "test.id": tid,
                "test.seq": i,
                "user.email": PII_EMAIL,
                "user.phone": PII_PHONE,
            },
        )
    return test_ids, errors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", choices=("grpc", "http"), required=True)
    p.add_argument(
        "--endpoint",
        required=True,
        help="HOST:PORT (or http://HOST:PORT); for http the /v1/traces and /v1/logs paths are added",
    )
    p.add_argument("--traces", type=int, default=10, metavar="N", help="number of spans to send")
    p.add_argument("--logs", type=int, default=10, metavar="N", help="number of log records to send")
    p.add_argument("--seed", type=int, default=1, help="seed for test ids and trace/span ids")
    p.add_argument("--spans-per-trace", type=int, default=3, help="spans per trace (default 3)")
    p.add_argument("--error-every", type=int, default=5, help="every Kth span/log is an error (0: none)")
    p.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    p.add_argument("--timeout", type=float, default=10.0, help="per-export timeout in seconds")
    p.add_argument("--service-name", default="weft-send-otel")
    args = p.parse_args(argv)
    if args.traces < 0 or args.logs < 0 or args.spans_per_trace < 1:
        p.error("--traces/--logs must be >= 0 and --spans-per-trace >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gzip = args.compression == "gzip"
    span_inner, log_inner, urls = make_exporters(args.protocol, args.endpoint, gzip, args.timeout)
    span_exp = CountingSpanExporter(span_inner)
    log_exp = CountingLogExporter(log_inner)

    resource = Resource.create({"service.name": args.service_name, "test.seed": args.seed})
    # Queues big enough that nothing is dropped before export.
    tp = TracerProvider(resource=resource, id_generator=SeededIdGenerator(args.seed))
    tp.add_span_processor(
        BatchSpanProcessor(span_exp, max_queue_size=max(2048, args.traces + 1), schedule_delay_millis=200)
    )
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(
        BatchLogRecordProcessor(log_exp, max_queue_size=max(2048, args.logs + 1), schedule_delay_millis=200)
    )

    t0 = time.monotonic()
    span_ids, trace_ids, span_errors = send_spans(
        tp, args.traces, args.spans_per_trace, args.error_every, args.seed
    )
    log_ids, log_errors = send_logs(lp, args.logs, args.error_every, args.seed)

    flush_ms = int(max(args.timeout * 3, 30) * 1000)
    flushed_spans = tp.force_flush(flush_ms)
    flushed_logs = lp.force_flush(flush_ms)
    tp.shutdown()
    lp.shutdown()
    elapsed = time.monotonic() - t0

    ok = (
        flushed_spans
        and flushed_logs
        and span_exp.tally.failed == 0
        and log_exp.tally.failed == 0
        and span_exp.tally.exported == len(span_ids)
        and log_exp.tally.exported == len(log_ids)
    )
    summary = {
        "ok": bool(ok),
        "protocol": args.protocol,
        "endpoint": urls,
        "compression": args.compression,
        "seed": args.seed,
        "elapsed_s": round(elapsed, 3),
        "spans": {
            "sent": len(span_ids),
            "error_status": span_errors,
            "flushed": flushed_spans,
            **span_exp.tally.as_dict(),
        },
        "logs": {
            "sent": len(log_ids),
            "error_severity": log_errors,
            "flushed": flushed_logs,
            **log_exp.tally.as_dict(),
        },
        "trace_count": len(trace_ids),
        "trace_ids": trace_ids,
        "span_test_ids": span_ids,
        "log_test_ids": log_ids,
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not ok:
        print("send_otel: export failed or incomplete (see summary)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
