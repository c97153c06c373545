"""A rotel trace processor that masks PII the way weft's pii-mask plugin does.

Rotel (the Rust OpenTelemetry collector, PyPI package ``rotel``) runs it in its embedded Python
interpreter for every batch of spans, with ``--otlp-with-trace-processor tests/peers/rotel_redact.py``;
it is the rotel counterpart of ``builtin:pii-mask`` in ``cargo xtask bench pipeline``
(xtask/src/pipeline_bench.rs). The type hints come from ``rotel-sdk``
(tests/peers/requirements-bench.txt); at run time rotel provides the classes itself.

What it masks, in the same formats as pii-mask (guests/pii-mask/README.md):

* payment card numbers: 13-19 digits, first digit 2-6, optionally grouped by single spaces or
  dashes, **valid Luhn check digit**; every digit but the first 4 and the last 4 becomes ``*``,
  separators stay: ``4111 1111 1111 1111`` -> ``4111 **** **** 1111``,
  ``4111111111111111`` -> ``4111********1111``. Luhn-invalid numbers (order ids) are left alone.
* mainland-China mobile numbers ``1[3-9]\\d{9}`` (contiguous or 3-4-4 grouped, optionally after
  ``86`` / ``+86``): ``13812345678`` -> ``138****5678``, ``+86 138 1234 5678`` ->
  ``+86 138 **** 5678``.
* e-mail addresses: the local part after its first character becomes ``***``:
  ``user@example.com`` -> ``u***@example.com``.

Numbers glued to letters or other digits are not matched (as in pii-mask). Where it looks: the
top-level string values of resource, span and span-event attributes, and span status messages.
Unlike pii-mask it does not descend into array / map attribute values, and it uses regular
expressions rather than pii-mask's byte scanners; the benchmark traffic (flat string attributes)
is masked the same by both.

Check it without rotel: ``python3 tests/peers/rotel_redact.py`` runs the self-test below.
"""

import re

try:  # rotel provides these modules inside its embedded interpreter.
    from rotel_sdk.open_telemetry.common.v1 import AnyValue
except ImportError:  # the stand-alone self-test
    AnyValue = None

_CARD = re.compile(r"(?<![0-9A-Za-z.])[2-6][0-9]{3}(?:[ -]?[0-9]){9,15}(?![0-9A-Za-z])")
_PHONE = re.compile(
    r"(?<![0-9A-Za-z])(\+?86[ -]?)?(1[3-9][0-9])([ -]?)[0-9]{4}([ -]?)([0-9]{4})(?![0-9A-Za-z])"
)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@"
    r"([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b"
)
# Cheap pre-check: nothing to do without an '@' or a run of 3 digits.
_MAYBE = re.compile(r"@|[0-9]{3}")


def _luhn(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_card(m):
    s = m.group(0)
    digits = [c for c in s if c.isdigit()]
    n = len(digits)
    if n < 13 or n > 19 or not _luhn(digits):
        return s
    # A grouped number must use one kind of separator.
    if " " in s and "-" in s:
        return s
    out = []
    seen = 0
    for c in s:
        if c.isdigit():
            seen += 1
            out.append(c if seen <= 4 or seen > n - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


def _mask_phone(m):
    prefix, head, sep1, sep2, tail = m.groups()
    if sep1 != sep2:  # 3-4-4 grouping uses the same separator twice, or none
        return m.group(0)
    return f"{prefix or ''}{head}{sep1}****{sep2}{tail}"


def mask(s):
    """Returns `s` with card numbers, phone numbers and e-mail local parts masked."""
    if not _MAYBE.search(s):
        return s
    s = _CARD.sub(_mask_card, s)
    s = _PHONE.sub(_mask_phone, s)
    if "@" in s:
        s = _EMAIL.sub(r"\1***@\2", s)
    return s


def _mask_attributes(attributes):
    for kv in attributes:
        v = kv.value
        if v is None:
            continue
        s = v.value
        if isinstance(s, str):
            masked = mask(s)
            if masked is not s and masked != s:
                kv.value = AnyValue(masked)


def process_spans(resource_spans):
    """Rotel's entry point for trace processors: called once per ResourceSpans."""
    resource = resource_spans.resource
    if resource is not None:
        _mask_attributes(resource.attributes)
    for scope_spans in resource_spans.scope_spans:
        for span in scope_spans.spans:
            _mask_attributes(span.attributes)
            for event in span.events:
                _mask_attributes(event.attributes)
            status = span.status
            if status is not None and status.message:
                masked = mask(status.message)
                if masked != status.message:
                    status.message = masked
                    span.status = status


if __name__ == "__main__":
    cases = {
        "4111 1111 1111 1111": "4111 **** **** 1111",
        "4111111111111111": "4111********1111",
        "4111-1111-1111-1111": "4111-****-****-1111",
        "4111111111111112": "4111111111111112",  # Luhn-invalid: an order id
        "ref4111111111111111": "ref4111111111111111",
        "13812345678": "138****5678",
        "+86 138 1234 5678": "+86 138 **** 5678",
        "user@example.com": "u***@example.com",
        "customer user@example.com paid with 4111 1111 1111 1111, callback 13812345678":
            "customer u***@example.com paid with 4111 **** **** 1111, callback 138****5678",
        "GET /users/42": "GET /users/42",
        # the strings of otlp-loadgen's benchmark batch (tests/lib.rs, bench_attributes)
        "5500-0000-0000-0004": "5500-****-****-0004",
        "13812340007": "138****0007",
        "user7@example.com": "u***@example.com",
        "contact alice7@corp.example.org for refunds": "contact a***@corp.example.org for refunds",
        "1234567890123463": "1234567890123463",  # order.id: leading 1, never a card
        "/api/v1/orders/{id}": "/api/v1/orders/{id}",
        "200": "200",
        "Mozilla/5.0 (X11; Linux x86_64) weft-bench/1.0": "Mozilla/5.0 (X11; Linux x86_64) weft-bench/1.0",
    }
    bad = {k: (mask(k), want) for k, want in cases.items() if mask(k) != want}
    for k, (got, want) in bad.items():
        print(f"FAIL {k!r}: got {got!r}, want {want!r}")
    print(f"{len(cases) - len(bad)} passed, {len(bad)} failed")
    raise SystemExit(1 if bad else 0)
