#!/usr/bin/env bash
# The engine-core benchmark: 2,000,000 generated readings through the two example queries,
# one `weir run` process each, 5 runs per query; prints the median events/s and peak RSS.
# Usage: bench/readings.sh [runs]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -q -p weir
weir=target/release/weir
input=${TMPDIR:-/tmp}/weir-readings-2m.jsonl
[ -s "$input" ] || $weir simulate readings --count 2000000 --seed 42 --output "$input"
n=$(wc -l < "$input")
result=${TMPDIR:-/tmp}/weir-bench-out.jsonl

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for q in filter:high_readings tumbling_avg:avg_per_second; do
  rules=${q%%:*}; sink=${q##*:}
  rates=(); rss=()
  for i in $(seq 1 "$runs"); do
    printf '\r%s: run %d/%d' "$rules" "$i" "$runs" >&2
    out=$( { /usr/bin/time -f '%e %M' $weir run "examples/readings/$rules.sql" -q \
               --input "readings=$input" --output "$sink=$result"; } 2>&1 )
    secs=${out% *}; kb=${out#* }
    rates+=("$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%d", n / s}')"); rss+=("$kb")
  done
  printf '\r\033[K' >&2
  echo "$rules: median $(printf '%s\n' "${rates[@]}" | median) events/s over $runs runs" \
       "(all: ${rates[*]}); peak RSS median $(( $(printf '%s\n' "${rss[@]}" | median) / 1024 )) MB"
done
