#!/usr/bin/env bash
# What authentication and TLS cost (issue 14): HTTP ingest, embedded MQTT endpoint publishes
# and new connections on a node without tokens or TLS against one with bearer tokens and TLS,
# both in one process, alternating runs. BENCHMARKS.md quotes its table.
#   bench/secure.sh [runs]      (default 5; builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p weir
target/release/weir bench secure --events 200000 --runs "${1:-5}"
