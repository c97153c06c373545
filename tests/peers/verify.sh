#!/usr/bin/env bash
# End-to-end check of the test peers on loopback (see tests/peers/README.md).
#
#  1. collector-file.yaml: send_otel.py over gRPC and over HTTP -> otelcol-weft
#     -> file; every test id must be in the file exactly once, PII unmasked.
#  2. collector-redact.yaml (PII_PROCESSOR=transform/pii, then redaction/pii)
#     chained in front of a file collector: every test id exactly once and no
#     raw PII left in the file (redaction/pii: none outside span status
#     messages, which that processor does not mask).
#
# Env: SPANS (default 300), LOGS (default 200), WORK (default: a mktemp dir).
# Builds nothing: run build-collector.sh and setup-python.sh first.
# Every process it starts is stopped on exit (by its own pid).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="$ROOT/tests/peers"
BIN="$ROOT/target/peers/otelcol-weft"
PY="$ROOT/.venv/bin/python"
SPANS="${SPANS:-300}"
LOGS="${LOGS:-200}"
WORK="${WORK:-$(mktemp -d /tmp/weft-peers.XXXXXX)}"
mkdir -p "$WORK"

[[ -x "$BIN" ]] || { echo "verify: $BIN missing: run tests/peers/build-collector.sh" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "verify: $PY missing: run tests/peers/setup-python.sh" >&2; exit 1; }

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [[ -n "$p" ]] && wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT

# wait_port HOST:PORT: until something listens (10 s at most).
wait_port() {
  local host=${1%:*} port=${1##*:} i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "verify: nothing listening on $1" >&2
  return 1
}

# start_collector NAME CONFIG [ENV=VAL...]: starts otelcol-weft in the background.
start_collector() {
  local name=$1 cfg=$2
  shift 2
  env "$@" "$BIN" --config "$cfg" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  echo "verify: started $name (pid $!), log $WORK/$name.log"
}

send() { # send PROTO ENDPOINT SEED OUT
  "$PY" "$PEERS/send_otel.py" --protocol "$1" --endpoint "$2" \
    --traces "$SPANS" --logs "$LOGS" --seed "$3" >"$4" 2>"$4.err" \
    || { echo "verify: send_otel.py $1 failed:" >&2; cat "$4.err" >&2; return 1; }
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("verify: sent", d["protocol"], "ok=%s" % d["ok"], "spans", d["spans"]["exported"], "/", d["spans"]["sent"], "logs", d["logs"]["exported"], "/", d["logs"]["sent"], "traces", d["trace_count"])' "$4"
}

# check FILE PII_MODE SUMMARY...: waits for the file to hold all items, then checks it.
# PII_MODE: present | absent | absent-except-status
check() {
  local file=$1 pii=$2
  shift 2
  local args=() s i
  if [[ $pii == absent-except-status ]]; then pii=absent; args+=(--ignore-status); fi
  for s in "$@"; do args+=(--summary "$s"); done
  for i in $(seq 1 50); do  # up to 5 s for batch + file flush
    if "$PY" "$PEERS/check_otlp_file.py" "$file" "${args[@]}" --pii "$pii" >"$file.check.json" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  "$PY" - "$file.check.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("verify: check %s: ok=%s lines=%d spans %d/%d unique (missing %d, dup %d, extra %d), "
      "logs %d/%d unique (missing %d, dup %d, extra %d), raw PII %s (in status messages %s)" % (
    r["file"], r["ok"], r["lines"],
    r["spans"]["unique_found"], r["spans"]["expected"], r["spans"]["missing_count"],
    r["spans"]["duplicated_count"], r["spans"]["unexpected_count"],
    r["logs"]["unique_found"], r["logs"]["expected"], r["logs"]["missing_count"],
    r["logs"]["duplicated_count"], r["logs"]["unexpected_count"], r["raw_pii_occurrences"],
    r["raw_pii_in_status_messages"]))
sys.exit(0 if r["ok"] else 1)
EOF
}

echo "verify: work dir $WORK, $SPANS spans + $LOGS logs per send"

# 1. file pipeline
start_collector file "$PEERS/collector-file.yaml" OUT_FILE="$WORK/out.jsonl"
wait_port 127.0.0.1:14317
wait_port 127.0.0.1:14318
send grpc 127.0.0.1:14317 1 "$WORK/grpc.json"
send http 127.0.0.1:14318 2 "$WORK/http.json"
check "$WORK/out.jsonl" present "$WORK/grpc.json" "$WORK/http.json"
cleanup

# 2. masking relay in front of a file collector
for proc in transform/pii redaction/pii; do
  tag=${proc%%/*}
  start_collector "sink-$tag" "$PEERS/collector-file.yaml" OUT_FILE="$WORK/masked-$tag.jsonl"
  start_collector "redact-$tag" "$PEERS/collector-redact.yaml" \
    PII_PROCESSOR="$proc" OTLP_EXPORT_ENDPOINT=127.0.0.1:14317 \
    OTLP_GRPC_ENDPOINT=127.0.0.1:15317 OTLP_HTTP_ENDPOINT=127.0.0.1:15318
  wait_port 127.0.0.1:14317
  wait_port 127.0.0.1:15317
  wait_port 127.0.0.1:15318
  send grpc 127.0.0.1:15317 3 "$WORK/redact-$tag-grpc.json"
  send http 127.0.0.1:15318 4 "$WORK/redact-$tag-http.json"
  # the redaction processor does not mask span status messages (transform/pii does)
  mode=absent
  [[ $tag == redaction ]] && mode=absent-except-status
  check "$WORK/masked-$tag.jsonl" "$mode" "$WORK/redact-$tag-grpc.json" "$WORK/redact-$tag-http.json"
  cleanup
done

echo "verify: all checks passed"
