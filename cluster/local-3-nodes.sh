#!/usr/bin/env bash
# A Ray head and two worker nodes on this one machine, with token authentication, for trying
# multi-node runs without a cloud. Each node is a `ray start --block` process in the background;
# `stop` ends exactly those processes (never `ray stop`, which would end every Ray on the machine).
#
#   cluster/local-3-nodes.sh start        # head on 127.0.0.1:6390, workers with 1 CPU each
#   RAY_AUTH_MODE=token cadasg train data.csv --target y --context g --num-workers 2 \
#       --address 127.0.0.1:6390 --out runs/local3
#   cluster/local-3-nodes.sh status
#   cluster/local-3-nodes.sh stop
#
# Environment: RAY (default: ray on PATH), PORT (6390), WORKER_CPUS (1), STATE (.ray-local-3),
# AUTH=0 to run without token authentication.
set -euo pipefail

RAY=${RAY:-ray}
PORT=${PORT:-6390}
WORKER_CPUS=${WORKER_CPUS:-1}
STATE=${STATE:-.ray-local-3}
HEAD=127.0.0.1

# A busy small machine can take longer than the default 30 s to start a node's dashboard agent.
export RAY_agent_register_timeout_ms=${RAY_agent_register_timeout_ms:-120000}

if [[ "${AUTH:-1}" != 0 ]]; then
    export RAY_AUTH_MODE=token
fi

# Ports that must differ between raylets sharing one host (the others are picked at random).
node_ports() {  # $1 = node index (0 = head)
    local base=$((20000 + 1000 * $1))
    echo "--node-manager-port=$((base + 1)) --object-manager-port=$((base + 2))" \
         "--dashboard-agent-listen-port=$((base + 3)) --dashboard-agent-grpc-port=$((base + 4))" \
         "--runtime-env-agent-port=$((base + 5)) --metrics-export-port=$((base + 6))" \
         "--min-worker-port=$((base + 100)) --max-worker-port=$((base + 999))"
}

launch() {  # $1 = name, rest = ray start arguments
    local name=$1; shift
    nohup "$RAY" start --block "$@" >"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
    echo "started $name (pid $!, log $STATE/$name.log)"
}

wait_for_nodes() {  # $1 = node count, $2 = pid file of the node starting: false if it died first
    for _ in $(seq 120); do
        joined=$("$RAY" status --address="$HEAD:$PORT" 2>/dev/null | grep -c " node_" || true)
        [[ "$joined" -ge "$1" ]] && return 0
        kill -0 "$(cat "$2")" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

start() {
    mkdir -p "$STATE"
    if [[ "${RAY_AUTH_MODE:-}" == token ]]; then
        "$RAY" get-auth-token --generate >/dev/null  # ~/.ray/auth_token, shared by every node here
    fi
    # shellcheck disable=SC2046
    launch head --head --node-ip-address=$HEAD --port="$PORT" --num-cpus=0 --include-dashboard=false \
        --ray-client-server-port=$((PORT + 1)) $(node_ports 0)
    wait_for_nodes 1 "$STATE/head.pid" || { echo "the head did not start; see $STATE/head.log" >&2; exit 1; }
    # One node at a time: `ray start` gives a node 30 s to register, which two nodes starting
    # together on a busy 2-core machine can miss; a node that misses it is started once more.
    for i in 1 2; do
        for attempt in 1 2; do
            # shellcheck disable=SC2046
            launch "worker$i" --address="$HEAD:$PORT" --node-ip-address=$HEAD --num-cpus="$WORKER_CPUS" \
                $(node_ports "$i")
            wait_for_nodes $((i + 1)) "$STATE/worker$i.pid" && break
            echo "worker$i did not join (attempt $attempt); see $STATE/worker$i.log" >&2
        done
    done
    "$RAY" status --address="$HEAD:$PORT"
    echo "submit with: --address $HEAD:$PORT (or ray://$HEAD:$((PORT + 1)) from another machine, over SSH)"
}

stop() {
    for name in worker2 worker1 head; do
        local f="$STATE/$name.pid"
        if [[ -f "$f" ]]; then
            kill "$(cat "$f")" 2>/dev/null && echo "stopped $name (pid $(cat "$f"))" || true
            rm -f "$f"
        fi
    done
    # `ray start --head` recorded this head as the machine's current cluster, where a plain
    # `ray.init()` would then try to connect: forget it if it is still ours.
    local current=/tmp/ray/ray_current_cluster
    if [[ -f "$current" ]] && grep -q ":$PORT\$" "$current"; then
        rm -f "$current"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) "$RAY" status --address="$HEAD:$PORT" ;;
    *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
