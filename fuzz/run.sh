#!/usr/bin/env bash
# Fuzzes weir's input readers for a bounded time each: the SQL front end, the event decoders,
# and the rule package and checkpoint readers. Seeds come from the project's own rules, golden
# inputs and error files. A crash leaves its input in fuzz/artifacts/<target>/; make it a
# regression test before fixing it.
#   fuzz/run.sh [seconds per target, default 60] [target ...]
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sql decoders packages)

seed() {
  local target=$1; shift
  mkdir -p "corpus/$target"
  for f in "$@"; do
    [ -f "$f" ] && cp "$f" "corpus/$target/$(echo "$f" | tr '/' '_')"
  done
  return 0
}
seed sql ../examples/*/*.sql ../tests/golden/*/rules.sql ../tests/errors/*.sql
seed decoders ../tests/golden/*/in.*.jsonl ../crates/weir/tests/data/* 
# A few lines of the DEBS 2012 data, when it is beside the project.
if [ -d ../../shared/data ]; then
  f=$(find ../../shared/data -type f | head -1)
  [ -n "$f" ] && head -c 4096 "$f" > corpus/decoders/debs.tsv
fi
seed packages

for t in "${targets[@]}"; do
  echo "== $t, ${seconds}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
done
