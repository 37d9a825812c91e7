#!/usr/bin/env bash
# Run a command with one CPU core kept busy by a burner process, to check that tests hold under load.
#
#   tools/stress.sh [-n BURNERS] [-r REPEAT] -- COMMAND [ARGS...]
#
# Examples (from the repository):
#   tools/stress.sh -- .venv/bin/python -m pytest -q                 # the whole suite, once
#   tools/stress.sh -r 2 -- .venv/bin/python -m pytest -q            # twice in a row
#   tools/stress.sh -r 3 -- .venv/bin/python -m pytest tests/unit/test_runner.py -q
#
# One burner by default (the issue: "the other core kept busy"). Each burner's pid is recorded and
# that pid alone is killed on exit, whatever way the script ends (normal end, failure, Ctrl-C,
# SIGTERM). The command's output passes through; the script exits with the first failing run's
# exit code, or 0 when every run passed. Runs stop at the first failure.
set -u

burners=1
repeat=1
while [ $# -gt 0 ]; do
    case "$1" in
        -n) burners="$2"; shift 2 ;;
        -r) repeat="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "stress.sh: no command given; usage: stress.sh [-n BURNERS] [-r REPEAT] -- COMMAND [ARGS...]" >&2
    exit 2
fi
case "$burners$repeat" in
    *[!0-9]*) echo "stress.sh: -n and -r take whole numbers, got -n $burners -r $repeat" >&2; exit 2 ;;
esac

# The burner's interpreter: $STRESS_PYTHON, else the repository's venv, else python3 on PATH.
python_bin="${STRESS_PYTHON:-}"
[ -z "$python_bin" ] && [ -x .venv/bin/python ] && python_bin=.venv/bin/python
[ -z "$python_bin" ] && python_bin="$(command -v python3 || command -v python)"
if [ -z "$python_bin" ]; then
    echo "stress.sh: no python3 on PATH for the burner; set STRESS_PYTHON=/path/to/python" >&2
    exit 2
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    pids=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq 1 "$burners"); do
    "$python_bin" -c "while True: pass" &
    pids+=("$!")
done
echo "stress.sh: ${#pids[@]} CPU burner(s) running, pid(s) ${pids[*]}; $(nproc) core(s)" >&2

status=0
for i in $(seq 1 "$repeat"); do
    echo "stress.sh: run $i of $repeat: $*" >&2
    "$@"
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "stress.sh: run $i of $repeat failed with exit code $status" >&2
        break
    fi
done
[ "$status" -eq 0 ] && echo "stress.sh: all $repeat run(s) passed under load" >&2
exit "$status"
