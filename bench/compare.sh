#!/usr/bin/env bash
# Two builds of weir side by side on the engine-core benchmark (bench/readings.sh's queries and
# input), runs alternating A, B, A, B, ... so both meet the same machine load; prints each
# query's median events/s and peak RSS for both and the ratio B/A.
#   bench/compare.sh OLD_WEIR NEW_WEIR [runs]
# A build of an earlier commit for OLD_WEIR:
#   git worktree add /tmp/weir-old <commit> && (cd /tmp/weir-old && cargo build --release -p weir)
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 runs=${3:-5}
input=${TMPDIR:-/tmp}/weir-readings-2m.jsonl
[ -s "$input" ] || "$b" simulate readings --count 2000000 --seed 42 --output "$input"
n=$(wc -l < "$input")
result=${TMPDIR:-/tmp}/weir-compare-out.jsonl

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for q in filter:high_readings tumbling_avg:avg_per_second; do
  rules=${q%%:*}; sink=${q##*:}
  declare -A rate rss
  rate=([a]="" [b]=""); rss=([a]="" [b]="")
  for i in $(seq 1 "$runs"); do
    for side in a b; do
      bin=${!side}
      printf '\r%s: run %d/%d (%s)' "$rules" "$i" "$runs" "$side" >&2
      t0=$(date +%s%N)
      kb=$( { /usr/bin/time -f '%M' "$bin" run "examples/readings/$rules.sql" -q \
                --input "readings=$input" --output "$sink=$result"; } 2>&1 )
      secs=$(awk -v d=$(( $(date +%s%N) - t0 )) 'BEGIN {print d / 1e9}')
      rate[$side]+="$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%d", n / s}') "
      rss[$side]+="$kb "
    done
  done
  printf '\r\033[K' >&2
  ra=$(printf '%s\n' ${rate[a]} | median); rb=$(printf '%s\n' ${rate[b]} | median)
  ma=$(( $(printf '%s\n' ${rss[a]} | median) / 1024 )); mb=$(( $(printf '%s\n' ${rss[b]} | median) / 1024 ))
  echo "$rules: A $ra events/s, $ma MB; B $rb events/s, $mb MB; B/A $(awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.3f", b / a}') (medians of $runs; A: ${rate[a]}; B: ${rate[b]})"
done
