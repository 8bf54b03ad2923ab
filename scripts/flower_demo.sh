#!/usr/bin/env bash
# The GPT-FL pipeline on Flower's deployment engine, on one machine as a user would run it on
# many: one SuperLink and N SuperNodes on 127.0.0.1, each node holding one partition, then
# `flwr run`, whose streamed log (one line per finished round) is shown and kept in the work
# directory. Writes $OUT/metrics.json.
#
#   scripts/flower_demo.sh [extra --run-config pairs, e.g. 'rounds=5 local-epochs=5']
#   NODES=5 PORT=9092 NODE_PORT=9100 OUT=runs/flower-demo PYTHON_BIN=.venv/bin \
#       ROUNDS=2 LOCAL_EPOCHS=1 scripts/flower_demo.sh
#
# The defaults (ROUNDS, LOCAL_EPOCHS) keep the demo short; the extra pairs override them.
#
# Stopping: Ctrl-C, or SIGTERM to this script (or to `make flower-demo`, which execs it), stops
# every process the demo started and exits promptly (130 / 143). Each process is started in its
# own process group and stopped by group; Flower also starts processes in sessions of their own
# (the SuperLink's SuperExec and the ServerApp), so the clean-up then stops any process that still
# carries this run's GPTFL_DEMO_TAG in its environment (every process started here inherits it).
#
# --insecure everywhere: loopback only. Outside a test use TLS and SuperNode authentication
# (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NODES=${NODES:-5}
PORT=${PORT:-9092}
NODE_PORT=${NODE_PORT:-9100}
OUT=${OUT:-runs/flower-demo}
BIN=${PYTHON_BIN:-$ROOT/.venv/bin}
ROUNDS=${ROUNDS:-2}
LOCAL_EPOCHS=${LOCAL_EPOCHS:-1}
EXTRA=${1:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gptfl-flower-demo.XXXXXX")
# Unique to this run, so that the clean-up never touches a process it did not start; an inherited
# tag (a caller's marker) is kept as a prefix, which lets the caller find the run's processes.
export GPTFL_DEMO_TAG=${GPTFL_DEMO_TAG:+$GPTFL_DEMO_TAG/}$$-$(basename "$WORK")
export FLWR_HOME=$WORK/flwr-home
export PATH=$BIN:$PATH
# a SuperNode looks for work every FLWR_SUPEREXEC_TASK_POLL_INTERVAL seconds (default 1)
export FLWR_SUPEREXEC_TASK_POLL_INTERVAL=${FLWR_SUPEREXEC_TASK_POLL_INTERVAL:-0.1}
PIDS=()

tagged() {  # TAGGED: pids of the live processes carrying this run's tag, other than this shell
    local pid files stat
    TAGGED=()
    # one grep over every environ file; it carries the tag too, but has exited when it is checked
    mapfile -t files < <(grep -lzxF "GPTFL_DEMO_TAG=$GPTFL_DEMO_TAG" /proc/[0-9]*/environ \
        2>/dev/null)
    for pid in "${files[@]}"; do
        pid=${pid#/proc/}
        pid=${pid%/environ}
        [[ $pid == "$$" ]] && continue
        { read -r stat < "/proc/$pid/stat"; } 2>/dev/null || continue  # exited meanwhile
        stat=${stat##*) }  # the state follows the command name
        [[ $stat != Z* ]] && TAGGED+=("$pid")
    done
    return 0
}

signal_all() {  # signal_all SIG: every process group started here, then every tagged process
    local pid
    for pid in "${PIDS[@]}"; do  # each pid leads its own process group (setsid)
        kill "-$1" -- "-$pid" 2>/dev/null || true
    done
    tagged
    for pid in "${TAGGED[@]}"; do kill "-$1" "$pid" 2>/dev/null || true; done
}

cleanup() {
    local status=${1:-$?}
    trap '' INT TERM  # the clean-up itself is not interrupted
    trap - EXIT
    signal_all TERM
    for _ in $(seq 50); do  # up to 5 s for a graceful stop, then SIGKILL
        tagged
        ((${#TAGGED[@]})) || break
        sleep 0.1
    done
    ((${#TAGGED[@]})) && signal_all KILL
    wait 2>/dev/null || true
    echo "stopped the demo's processes; logs in $WORK" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'cleanup 130' INT
trap 'cleanup 143' TERM

mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "demo"

[superlink.demo]
address = "127.0.0.1:$PORT"
insecure = true
TOML

setsid flower-superlink --insecure --host 127.0.0.1 --port "$PORT" \
    --disable-runtime-dependency-installation > "$WORK/superlink.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    grep -q "Uvicorn running" "$WORK/superlink.log" 2>/dev/null && break
    kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$WORK/superlink.log" >&2; exit 1; }
    sleep 0.2
done
for i in $(seq 0 $((NODES - 1))); do
    setsid flower-supernode --insecure --superlink "127.0.0.1:$PORT" \
        --port $((NODE_PORT + i)) \
        --node-config "partition-id=$i num-partitions=$NODES" > "$WORK/supernode-$i.log" 2>&1 &
    PIDS+=($!)
done
echo "SuperLink pid ${PIDS[0]}, SuperNodes pids ${PIDS[*]:1}; logs in $WORK" >&2

# In the background, then `wait`: bash runs a trap only once its foreground job ends, and a
# waiting `wait` returns as soon as a trapped signal arrives.
RUN_CONFIG="clients=$NODES cohort=$NODES rounds=$ROUNDS local-epochs=$LOCAL_EPOCHS out-dir='$OUT'"
setsid bash -c 'set -o pipefail; "$@" 2>&1 | tee "$0"' "$WORK/run.log" \
    flwr run "$ROOT/flower-app" demo --stream --run-config "$RUN_CONFIG" \
    ${EXTRA:+--run-config "$EXTRA"} < /dev/null &
PIDS+=($!)
wait "$!"
test -s "$OUT/metrics.json" || { echo "no $OUT/metrics.json: the run failed" >&2; exit 1; }
echo "wrote $OUT/metrics.json"
