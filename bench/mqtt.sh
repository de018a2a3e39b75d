#!/usr/bin/env bash
# End-to-end MQTT benchmark of `weir serve` (issue 3): a filter rule between two topics,
# through the machine's Mosquitto (127.0.0.1:1883) and through weir's embedded endpoint.
# Prints one JSON line per measurement; BENCHMARKS.md quotes medians of these.
#   bench/mqtt.sh [runs]      (default 3; needs a release build: cargo build --release -p weir)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
WEIR=target/release/weir
HTTP=127.0.0.1:7079
MQTT_PORT=1889
export WEIR_NODE=http://$HTTP
DATA=$(mktemp -d)
$WEIR serve --listen $HTTP --mqtt 127.0.0.1:$MQTT_PORT --data-dir "$DATA" 2>"$DATA/serve.log" &
NODE=$!
trap 'kill $NODE 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 1

echo "idle RSS (no rules): $(ps -o rss= -p $NODE) KB"
cp $WEIR "$DATA/weir-stripped" && strip "$DATA/weir-stripped"
echo "release binary: $(stat -c %s $WEIR) bytes, stripped $(stat -c %s "$DATA/weir-stripped") bytes"

T=wbench$$
cat > "$DATA/broker.sql" <<SQL
CREATE STREAM b_in WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = '$T/in');
CREATE STREAM b_out WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = '$T/out');
INSERT INTO b_out SELECT * FROM b_in WHERE temp >= 20;
SQL
cat > "$DATA/embedded.sql" <<SQL
CREATE STREAM e_in WITH (topic = '$T/in');
INSERT INTO e_out SELECT * FROM e_in WHERE temp >= 20;
SQL
$WEIR rule install "$DATA/broker.sql" --id broker >/dev/null
$WEIR rule install "$DATA/embedded.sql" --id embedded >/dev/null
sleep 1
echo "RSS with the two rules: $(ps -o rss= -p $NODE) KB"

for run in $(seq "$RUNS"); do
  for rate in 1000 10000; do
    echo "run $run mosquitto latency rate=$rate: $($WEIR bench mqtt latency --port 1883 --input $T/in --output $T/out --rate $rate --seconds 10)"
    echo "run $run embedded latency rate=$rate: $($WEIR bench mqtt latency --port $MQTT_PORT --input $T/in --output e_out --rate $rate --seconds 10)"
  done
  echo "run $run mosquitto throughput weir: $($WEIR bench mqtt throughput --port 1883 --input $T/in --output $T/out --count 200000)"
  echo "run $run mosquitto throughput direct: $($WEIR bench mqtt throughput --port 1883 --input $T/in --output $T/in --count 200000)"
  echo "run $run embedded throughput weir: $($WEIR bench mqtt throughput --port $MQTT_PORT --input $T/in --output e_out --count 200000)"
  echo "run $run embedded throughput direct: $($WEIR bench mqtt throughput --port $MQTT_PORT --input $T/in --output $T/in --count 200000)"
done
echo "RSS after the runs: $(ps -o rss= -p $NODE) KB"
