#!/usr/bin/env bash
# Stop the local Ray cluster that cluster/start-local-cluster.sh started: SIGTERM to each node's
# `ray start --block` process (worker nodes first, the head last), which stops the Ray processes it
# started, then SIGKILL to whatever is left of its process group after a grace period. Only the process groups recorded in the state directory are signalled, never other Ray
# instances on the machine.
set -euo pipefail

usage() {
    cat <<EOF
Usage: $(basename "$0") [-t GRACE_SECONDS] [-k] [-h]

Stop the local Ray cluster started by start-local-cluster.sh.

Options:
  -t GRACE_SECONDS  seconds to wait after SIGTERM before SIGKILL   [default 30]
  -k                also delete the state directory (logs and Ray's temp dir)
  -h                show this help

Environment:
  GAZERM_CLUSTER_DIR  the state directory the start script used
                      [default: the one recorded in ~/.ray/gazerm-local-cluster]
EOF
}

grace=30
keep=true
while getopts "t:kh" option; do
    case $option in
        t) grace=$OPTARG ;;
        k) keep=false ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if (($# > 0)) || ! [[ $grace =~ ^[0-9]+$ ]]; then
    usage >&2
    exit 2
fi

pointer=$HOME/.ray/gazerm-local-cluster
if [[ -n ${GAZERM_CLUSTER_DIR:-} ]]; then
    state_dir=$GAZERM_CLUSTER_DIR
elif [[ -s $pointer ]]; then
    state_dir=$(cat "$pointer")
else
    echo "no local cluster recorded in $pointer (nothing to stop)"
    exit 0
fi
pid_file=$state_dir/pids
if [[ ! -f $pid_file ]]; then
    echo "no local cluster recorded in $state_dir (nothing to stop)"
    exit 0
fi

group_alive() {
    kill -0 -- "-$1" 2>/dev/null
}

# Worker nodes first so that they do not log the head's disappearance as a failure.
mapfile -t groups < <(tac "$pid_file")
for entry in "${groups[@]}"; do
    read -r pgid name <<<"$entry"
    if group_alive "$pgid"; then
        echo "stopping $name (process group $pgid) ..."
        kill -TERM "$pgid" 2>/dev/null || true
    fi
done

for ((i = 0; i < grace; i++)); do
    remaining=()
    for entry in "${groups[@]}"; do
        read -r pgid _ <<<"$entry"
        if group_alive "$pgid"; then
            remaining+=("$pgid")
        fi
    done
    if ((${#remaining[@]} == 0)); then
        break
    fi
    sleep 1
done

for entry in "${groups[@]}"; do
    read -r pgid name <<<"$entry"
    if group_alive "$pgid"; then
        echo "$name did not stop within ${grace}s: SIGKILL to process group $pgid"
        kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
done

rm -f "$pid_file"
if [[ -s $pointer && $(cat "$pointer") == "$state_dir" ]]; then
    rm -f "$pointer"
fi
if [[ $keep == false ]]; then
    rm -rf "$state_dir"
    echo "local Ray cluster stopped; removed $state_dir"
else
    echo "local Ray cluster stopped; logs kept in $state_dir/logs"
fi
