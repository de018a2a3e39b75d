#!/usr/bin/env bash
# What durable state costs: the engine-core benchmark queries with a checkpoint every second
# against none (ratio), checkpoint time and size, and the recovery time of a rule holding
# 1,000,000 keys. Usage: bench/state.sh [runs]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weir
target/release/weir bench state --events 20000000 --keys 1000000 --runs "${1:-5}"
