#!/usr/bin/env bash
# Build the minimal OpenTelemetry Collector distribution used as a test peer
# (tests/peers/collector) to target/peers/otelcol-weft.
#
# Idempotent: skips the build when the binary is newer than main.go, go.mod
# and go.sum. Set FORCE=1 to rebuild anyway.
#
# Needs only Go (1.26+) and the Go module proxy; module versions are pinned
# in go.mod / go.sum (collector core v0.161.0 / v1.67.0, contrib v0.161.0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/tests/peers/collector"
OUT_DIR="$ROOT/target/peers"
BIN="$OUT_DIR/otelcol-weft"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then
    GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
  else
    echo "build-collector: go not found (set GO=/path/to/go)" >&2
    exit 1
  fi
fi

up_to_date() {
  [[ -x "$BIN" ]] || return 1
  local f
  for f in "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum"; do
    [[ "$BIN" -nt "$f" ]] || return 1
  done
  return 0
}

if [[ "${FORCE:-0}" != "1" ]] && up_to_date; then
  echo "build-collector: $BIN is up to date"
  exit 0
fi

mkdir -p "$OUT_DIR"
echo "build-collector: building $BIN with $("$GO" version)"
start=$(date +%s)
# -mod=mod lets go fill in go.sum if an entry is missing; go.sum is committed.
# -trimpath and -s -w keep the binary smaller and reproducible.
# BUILD_P caps build parallelism (default: number of CPUs).
(
  cd "$SRC"
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0 \
    "$GO" build ${BUILD_P:+-p "$BUILD_P"} -buildvcs=false -trimpath -ldflags "-s -w" -o "$BIN.tmp" .
)
mv -f "$BIN.tmp" "$BIN"
end=$(date +%s)
echo "build-collector: built $BIN ($(du -h "$BIN" | cut -f1)) in $((end - start))s"
