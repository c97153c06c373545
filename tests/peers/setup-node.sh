#!/usr/bin/env bash
# Install the pinned JavaScript tools weft's tests build plugins with (componentize-js, from
# tests/peers/node/package-lock.json) into tests/peers/node/node_modules, with `npm ci`.
#
# Idempotent: when node_modules matches the lock file (a stamp holds its checksum), nothing is
# installed. Needs Node.js 20+ and npm.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/node" && pwd)"
STAMP="$DIR/node_modules/.weft-lock.sha256"
command -v node >/dev/null || { echo "setup-node: node is not installed (Node.js 20+ needed)" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup-node: npm is not installed" >&2; exit 1; }

want="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$DIR/node_modules/.bin/componentize-js" ]]; then
  echo "setup-node: $DIR/node_modules is up to date"
  exit 0
fi
echo "setup-node: npm ci in $DIR (node $(node --version))"
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
echo "$want" > "$STAMP"
echo "setup-node: done (componentize-js $(cd "$DIR" && node -p 'require("./node_modules/@bytecodealliance/componentize-js/package.json").version'))"
