#!/usr/bin/env bash
# Fuzzes a node's REST API from its own description, /v1/openapi.json, with schemathesis: every
# operation with generated and mutated requests, for a bounded time. It fails on any 5xx and on
# any answer that contradicts the document (status code, content type, body schema). The node
# runs with tokens, as it would on a network, and the fuzzer is an admin.
#   fuzz/rest.sh [seconds, default 120]
# Installs schemathesis into ~/.local/share/weir/schemathesis on first use (pip).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
venv="$HOME/.local/share/weir/schemathesis"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
cargo build --quiet --bin weir
work=$(mktemp -d)
trap 'kill "$node" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s admin\n' "$token" > "$work/tokens"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/weir serve --listen "127.0.0.1:$port" --mqtt 127.0.0.1:0 --data-dir "$work/data" \
  --auth-token-file "$work/tokens" > "$work/node.log" 2>&1 &
node=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$base/v1/health" > /dev/null && break; sleep 0.1; done
# A stream and a rule for the operations on existing resources to find.
curl -sf -H "Authorization: Bearer $token" -d '{"sql":"CREATE STREAM readings (sensor STRING, temp DOUBLE)"}' "$base/v1/streams" > /dev/null
curl -sf -H "Authorization: Bearer $token" \
  -d '{"id":"hot","sql":"INSERT INTO hot_out SELECT sensor, temp FROM readings WHERE temp > 30;"}' "$base/v1/rules" > /dev/null
status=0
"$venv/bin/schemathesis" run "$base/v1/openapi.json" --url "$base" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-time "$seconds" --request-timeout 10 --workers 2 --suppress-health-check all \
  --exclude-path-regex '/tail$|/dead_letters$' || status=$?
if ! kill -0 "$node" 2>/dev/null; then
  echo "the node died during the run:"; tail -20 "$work/node.log"; exit 1
fi
exit "$status"
