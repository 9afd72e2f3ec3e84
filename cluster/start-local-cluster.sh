#!/usr/bin/env bash
# Start a multi-node Ray cluster on this machine: one head node plus N worker nodes, each its own
# raylet with its own block of ports, the dashboard / job API bound to the loopback address. It
# behaves like a real cluster for `ray job submit` (jobs/README.md) without any cloud or
# Kubernetes; stop it with cluster/stop-local-cluster.sh.
#
# Ray advertises the machine's own IP even when asked for 127.0.0.1
# (ray._private.services.resolve_ip_for_localhost) and its gRPC services (GCS, raylets, object
# managers) listen on all interfaces; Ray's token authentication, switched on below, guards them.
# Keep the port ranges closed in the host firewall on a machine reachable from a network.
#
# Every node runs `ray start --block` in its own process group, whose id is recorded in the state
# directory: the stop script ends exactly those groups and never touches other Ray instances on a
# shared machine (which `ray stop` would kill too).
#
# On a shared machine nothing of the cluster is readable by other users: the script runs with
# umask 077, the state directory (logs, Ray's session files and sockets) is a fresh private one
# (mktemp -d, mode 0700) unless GAZERM_CLUSTER_DIR names one of the user's own, and the token file
# (~/.ray/auth_token) is made mode 0600 whether the script creates it or finds it.
set -euo pipefail

usage() {
    cat <<EOF
Usage: $(basename "$0") [-n WORKERS] [-c CPUS_PER_WORKER] [-H HEAD_CPUS] [-h]

Start a local Ray cluster: a head node plus WORKERS worker nodes on this machine.

Options (each also settable by the environment variable in brackets):
  -n WORKERS           worker nodes to start                    [GAZERM_CLUSTER_WORKERS, default 2]
  -c CPUS_PER_WORKER   logical CPUs each worker node offers     [GAZERM_CLUSTER_WORKER_CPUS, default 2]
  -H HEAD_CPUS         logical CPUs the head node offers        [GAZERM_CLUSTER_HEAD_CPUS, default 1]
  -h                   show this help

Other settings (environment only):
  GAZERM_CLUSTER_DIR          state, logs and Ray's temp dir, made mode 0700
                              [default: a new private one, mktemp -d /tmp/gazerm-rc.XXXXXX,
                              recorded in ~/.ray/gazerm-local-cluster for the stop script]
  GAZERM_CLUSTER_GCS_PORT     head GCS port                        [default 6380]
  GAZERM_CLUSTER_DASHBOARD_PORT  dashboard + job submission port  [default 8265]
  GAZERM_CLUSTER_PORT_BASE    first of each node's 1000-port block [default 20000]
  GAZERM_CLUSTER_OBJECT_STORE_MB  object store per node, MiB      [default 512]

Node i (0 = head) uses ports PORT_BASE + 1000*i + 0..6 for its own services and
PORT_BASE + 1000*i + 100..999 for its worker processes.
EOF
}

workers=${GAZERM_CLUSTER_WORKERS:-2}
worker_cpus=${GAZERM_CLUSTER_WORKER_CPUS:-2}
head_cpus=${GAZERM_CLUSTER_HEAD_CPUS:-1}
while getopts "n:c:H:h" option; do
    case $option in
        n) workers=$OPTARG ;;
        c) worker_cpus=$OPTARG ;;
        H) head_cpus=$OPTARG ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if (($# > 0)); then
    usage >&2
    exit 2
fi
for value in "$workers" "$worker_cpus" "$head_cpus"; do
    if ! [[ $value =~ ^[0-9]+$ ]]; then
        echo "error: '$value' is not a non-negative integer" >&2
        exit 2
    fi
done

# Everything created from here on (state dir, logs, Ray's session files, the token) is the user's alone.
umask 077
pointer=$HOME/.ray/gazerm-local-cluster # where the stop script finds a default (mktemp) state dir
if [[ -z ${GAZERM_CLUSTER_DIR:-} && -s $pointer && -e $(cat "$pointer")/pids ]]; then
    echo "error: a cluster is running with state in $(cat "$pointer") (or was not stopped cleanly);" \
        "run cluster/stop-local-cluster.sh first" >&2
    exit 1
fi
state_dir=${GAZERM_CLUSTER_DIR:-}
gcs_port=${GAZERM_CLUSTER_GCS_PORT:-6380}
dashboard_port=${GAZERM_CLUSTER_DASHBOARD_PORT:-8265}
port_base=${GAZERM_CLUSTER_PORT_BASE:-20000}
object_store_bytes=$((${GAZERM_CLUSTER_OBJECT_STORE_MB:-512} * 1024 * 1024))
host=127.0.0.1
gcs_address=$host:$gcs_port
dashboard_url=http://$host:$dashboard_port

if [[ -n $state_dir && -e $state_dir/pids ]]; then
    echo "error: $state_dir/pids exists: a cluster is running (or was not stopped cleanly);" \
        "run cluster/stop-local-cluster.sh first" >&2
    exit 1
fi

port_in_use() {
    (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}
for port in "$gcs_port" "$dashboard_port"; do
    if port_in_use "$port"; then
        echo "error: port $port on $host is already in use (another Ray instance?)" >&2
        exit 1
    fi
done

if [[ -z $state_dir ]]; then
    # /tmp, not $TMPDIR: Ray's socket paths under it must stay under 107 bytes.
    state_dir=$(mktemp -d /tmp/gazerm-rc.XXXXXX)
    mkdir -p "$(dirname "$pointer")"
    printf '%s\n' "$state_dir" >"$pointer"
else
    # One's own directory only: not a symlink someone planted, not another user's.
    mkdir -p "$state_dir"
    if [[ -L $state_dir || ! -O $state_dir ]]; then
        echo "error: GAZERM_CLUSTER_DIR=$state_dir is a symlink or not owned by you" >&2
        exit 1
    fi
    chmod 700 "$state_dir"
fi
mkdir -p "$state_dir/logs"
: >"$state_dir/pids"

# Whatever fails from here on, tear down the nodes already started.
started=false
cleanup_on_failure() {
    if [[ $started == false ]]; then
        echo "start-up failed: stopping the nodes already started" >&2
        GAZERM_CLUSTER_DIR=$state_dir "$(dirname "$0")/stop-local-cluster.sh" -t 10
    fi
}
trap cleanup_on_failure EXIT

export RAY_USAGE_STATS_ENABLED=0
# Every node and client must agree on token authentication: on, with the user's token
# (~/.ray/auth_token, generated once, mode 0600). `ray job submit` from this user finds the same token.
export RAY_AUTH_MODE=token
if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} ]]; then
    # Created under umask 077 when missing (the CLI's start costs seconds on a small machine).
    [[ -s $HOME/.ray/auth_token ]] || ray get-auth-token --generate >/dev/null
    chmod 600 "$HOME/.ray/auth_token"        # one generated before, by Ray's default umask, may be 0644
elif [[ -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then
    chmod 600 "$RAY_AUTH_TOKEN_PATH"
fi
# A loaded machine can take longer than Ray's default 30 s for a raylet to register with the GCS.
export RAY_raylet_start_wait_time_s=${RAY_raylet_start_wait_time_s:-120}
# Nodes are stopped with SIGTERM; skip the drain wait meant for Ray Serve proxies (30 s by default).
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0

# start_node NAME CPUS INDEX [ray start options...]: run one node in the background, in its own
# process group (setsid), and record the group id; its output goes to logs/NAME.log. Each node gets
# its own Ray temp dir (ray/NAME): nodes sharing one would share the session's runtime_resources/,
# and a node's runtime-env agent garbage-collecting a job's unpacked working_dir would delete it
# from under the job driver running on another node.
start_node() {
    local name=$1 cpus=$2 index=$3
    shift 3
    local base=$((port_base + 1000 * index))
    setsid ray start --block \
        --temp-dir "$state_dir/ray/$name" \
        --num-cpus "$cpus" \
        --num-gpus 0 \
        --object-store-memory "$object_store_bytes" \
        --node-manager-port "$base" \
        --object-manager-port $((base + 1)) \
        --dashboard-agent-listen-port $((base + 2)) \
        --dashboard-agent-grpc-port $((base + 3)) \
        --runtime-env-agent-port $((base + 4)) \
        --metrics-export-port $((base + 5)) \
        --min-worker-port $((base + 100)) \
        --max-worker-port $((base + 999)) \
        --disable-usage-stats \
        "$@" >"$state_dir/logs/$name.log" 2>&1 &
    echo "$! $name" >>"$state_dir/pids"
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND five times a second until it succeeds; fail
# when it times out or a node has died (its `ray start --block` exits when startup fails).
wait_for() {
    local what=$1 seconds=$2 pid name
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        while read -r pid name; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "error: the $name node exited while waiting for $what;" \
                    "see $state_dir/logs/$name.log" >&2
                return 1
            fi
        done <"$state_dir/pids"
        sleep 0.2
    done
    echo "error: timed out after ${seconds}s waiting for $what; logs in $state_dir/logs" >&2
    return 1
}

# Any HTTP answer means the dashboard is up: with token authentication an unauthenticated request
# gets 401.
dashboard_up() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$dashboard_url/api/version") != 000 ]]
}

# A node's `ray start` prints this once the GCS lists the node alive (ray._private.node.Node waits for
# that): read from its log, not asked of the cluster (`ray list nodes` takes seconds a call here).
node_started() {
    grep -q "Ray runtime started" "$state_dir/logs/$1.log"
}

echo "starting the head node ($head_cpus CPUs) ..."
start_node head "$head_cpus" 0 \
    --head --port "$gcs_port" \
    --ray-client-server-port $((port_base + 6)) \
    --include-dashboard true \
    --dashboard-host "$host" --dashboard-port "$dashboard_port"
wait_for "the dashboard at $dashboard_url" 120 dashboard_up

# One node at a time: several raylets registering at once can time out on a small, busy machine.
for ((n = 1; n <= workers; n++)); do
    echo "starting worker node $n/$workers ($worker_cpus CPUs) ..."
    start_node "worker-$n" "$worker_cpus" "$n" --address "$gcs_address"
    wait_for "worker node $n to join" 180 node_started "worker-$n"
done
started=true

cat <<EOF

Local Ray cluster up: 1 head + $workers worker nodes, $((head_cpus + workers * worker_cpus)) CPUs.
  dashboard / job submission: $dashboard_url
  GCS address:                $gcs_address
  logs:                       $state_dir/logs, Ray's in $state_dir/ray/NODE

Submit a job (see jobs/README.md); Ray clients need token authentication switched on:
  export RAY_AUTH_MODE=token
  ray job submit --address $dashboard_url --working-dir . --runtime-env jobs/runtime_env.yaml \\
      -- python -m gazerm train jobs/quickstart.yaml --set output_dir=\$PWD/runs/cluster-quickstart
Stop it with: cluster/stop-local-cluster.sh
EOF
