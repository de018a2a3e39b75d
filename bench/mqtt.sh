#!/usr/bin/env bash
# End-to-end MQTT benchmark of `weir serve` (issue 3): a filter rule between two topics,
# through the machine's Mosquitto (127.0.0.1:1883), through a private Mosquitto on port 1890
# with `set_tcp_nodelay true` (the machine's keeps Nagle's algorithm, Mosquitto's default, which
# holds small packets up to 40 ms) and through weir's embedded endpoint.
# Prints one JSON line per measurement; BENCHMARKS.md quotes medians of these.
#   bench/mqtt.sh [runs]      (default 3; needs a release build: cargo build --release -p weir)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
WEIR=target/release/weir
HTTP=127.0.0.1:7079
MQTT_PORT=1889
PROMPT_PORT=1890
export WEIR_NODE=http://$HTTP
DATA=$(mktemp -d)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' $PROMPT_PORT >"$DATA/mosquitto.conf"
mosquitto -c "$DATA/mosquitto.conf" 2>"$DATA/mosquitto.log" &
BROKER=$!
$WEIR serve --listen $HTTP --mqtt 127.0.0.1:$MQTT_PORT --data-dir "$DATA" 2>"$DATA/serve.log" &
NODE=$!
trap 'kill $NODE $BROKER 2>/dev/null; rm -rf "$DATA"' EXIT
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
cat > "$DATA/prompt.sql" <<SQL
CREATE STREAM p_in WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:$PROMPT_PORT', topic = '$T/in');
CREATE STREAM p_out WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:$PROMPT_PORT', topic = '$T/out');
INSERT INTO p_out SELECT * FROM p_in WHERE temp >= 20;
SQL
cat > "$DATA/embedded.sql" <<SQL
CREATE STREAM e_in WITH (topic = '$T/in');
INSERT INTO e_out SELECT * FROM e_in WHERE temp >= 20;
SQL
$WEIR rule install "$DATA/broker.sql" --id broker >/dev/null
$WEIR rule install "$DATA/prompt.sql" --id prompt >/dev/null
$WEIR rule install "$DATA/embedded.sql" --id embedded >/dev/null
sleep 1
echo "RSS with the three rules: $(ps -o rss= -p $NODE) KB"

for run in $(seq "$RUNS"); do
  for rate in 1000 10000; do
    echo "run $run mosquitto latency rate=$rate: $($WEIR bench mqtt latency --port 1883 --input $T/in --output $T/out --rate $rate --seconds 10)"
    echo "run $run mosquitto-nodelay latency rate=$rate: $($WEIR bench mqtt latency --port $PROMPT_PORT --input $T/in --output $T/out --rate $rate --seconds 10)"
    echo "run $run embedded latency rate=$rate: $($WEIR bench mqtt latency --port $MQTT_PORT --input $T/in --output e_out --rate $rate --seconds 10)"
  done
  echo "run $run mosquitto throughput weir: $($WEIR bench mqtt throughput --port 1883 --input $T/in --output $T/out --count 200000)"
  echo "run $run mosquitto throughput direct: $($WEIR bench mqtt throughput --port 1883 --input $T/in --output $T/in --count 200000)"
  echo "run $run embedded throughput weir: $($WEIR bench mqtt throughput --port $MQTT_PORT --input $T/in --output e_out --count 200000)"
  echo "run $run embedded throughput direct: $($WEIR bench mqtt throughput --port $MQTT_PORT --input $T/in --output $T/in --count 200000)"
done
echo "RSS after the runs: $(ps -o rss= -p $NODE) KB"
