#!/usr/bin/env python3
"""Check an OTLP/JSON-lines file (collector file exporter) against send_otel.py summaries.

    check_otlp_file.py OUT.jsonl --summary grpc.json --summary http.json [--pii absent|present]

Counts every span and log record in the file by its ``test.id`` attribute and
reports, as JSON on stdout, which expected ids are missing, duplicated or
unexpected. With ``--pii absent`` it also requires that none of the raw PII
strings send_otel.py uses (card, phone, e-mail) appears anywhere in the file
(masking check); with ``--pii present`` that they do appear (pass-through check).
``--ignore-status`` leaves span status messages out of that check.

Exit status 0 when every expected id is present exactly once (and the PII
check holds), 1 otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

PII = ("4111 1111 1111 1111", "13812345678", "user@example.com")


def attr_value(v: dict):
    for k in ("stringValue", "intValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    return None


def test_id(attrs: list) -> str | None:
    for a in attrs or []:
        if a.get("key") == "test.id":
            return attr_value(a.get("value", {}))
    return None


def count_pii(node, hits: collections.Counter, where: str) -> None:
    """Count raw PII strings in every string of an OTLP/JSON document, by location."""
    if isinstance(node, dict):
        for k, v in node.items():
            count_pii(v, hits, "status" if k == "status" else where)
    elif isinstance(node, list):
        for v in node:
            count_pii(v, hits, where)
    elif isinstance(node, str):
        for s in PII:
            n = node.count(s)
            if n:
                hits[(where, s)] += n


def scan(path: str):
    spans = collections.Counter()
    logs = collections.Counter()
    lines = 0
    no_id = {"spans": 0, "logs": 0}
    pii_hits = collections.Counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            lines += 1
            doc = json.loads(line)
            count_pii(doc, pii_hits, "other")
            for rs in doc.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        tid = test_id(sp.get("attributes"))
                        if tid is None:
                            no_id["spans"] += 1
                        else:
                            spans[tid] += 1
            for rl in doc.get("resourceLogs", []):
                for sl in rl.get("scopeLogs", []):
                    for lr in sl.get("logRecords", []):
                        tid = test_id(lr.get("attributes"))
                        if tid is None:
                            no_id["logs"] += 1
                        else:
                            logs[tid] += 1
    return lines, spans, logs, no_id, pii_hits


def compare(kind: str, expected: list[str], seen: collections.Counter) -> dict:
    exp = collections.Counter(expected)
    missing = sorted(t for t in exp if seen[t] == 0)
    dup = sorted(t for t in exp if seen[t] > exp[t])
    extra = sorted(t for t in seen if t not in exp)
    return {
        "expected": len(expected),
        "found": sum(seen[t] for t in exp),
        "unique_found": sum(1 for t in exp if seen[t] > 0),
        "missing": missing[:20],
        "missing_count": len(missing),
        "duplicated": dup[:20],
        "duplicated_count": len(dup),
        "unexpected_count": len(extra),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--summary", action="append", default=[], help="send_otel.py JSON summary (repeatable)")
    p.add_argument("--pii", choices=("absent", "present", "ignore"), default="ignore")
    p.add_argument(
        "--ignore-status",
        action="store_true",
        help="leave span status messages out of the PII check (the redaction processor does not mask them)",
    )
    args = p.parse_args()

    exp_spans: list[str] = []
    exp_logs: list[str] = []
    for s in args.summary:
        with open(s, encoding="utf-8") as fh:
            summ = json.loads(fh.read().strip().splitlines()[-1])
        exp_spans += summ["span_test_ids"]
        exp_logs += summ["log_test_ids"]

    lines, spans, logs, no_id, pii_hits = scan(args.file)
    report = {
        "file": args.file,
        "lines": lines,
        "spans_in_file": sum(spans.values()) + no_id["spans"],
        "logs_in_file": sum(logs.values()) + no_id["logs"],
        "without_test_id": no_id,
        "spans": compare("spans", exp_spans, spans),
        "logs": compare("logs", exp_logs, logs),
        "raw_pii_occurrences": {s: sum(n for (w, x), n in pii_hits.items() if x == s) for s in PII},
        "raw_pii_in_status_messages": {s: pii_hits[("status", s)] for s in PII},
    }
    ok = all(
        report[k]["missing_count"] == 0
        and report[k]["duplicated_count"] == 0
        and report[k]["unexpected_count"] == 0
        for k in ("spans", "logs")
    )
    counted = {
        key: n for key, n in pii_hits.items() if not (args.ignore_status and key[0] == "status")
    }
    if args.pii == "absent":
        ok = ok and sum(counted.values()) == 0
    elif args.pii == "present":
        ok = ok and all(any(n for (w, x), n in counted.items() if x == s) for s in PII)
    report["ok"] = ok
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
