#!/usr/bin/env bash
# tests/e2e/run.sh SOMA_BIN [PYTHON] - `make e2e`: the whole suite twice, on the embedded SQLite
# store and on a PostgreSQL the fixtures start (SOMA_E2E_STORE). The two passes share nothing (each
# has its own servers on free ports, its own --basetemp and log), so they run at the same time:
# most of a pass is spent waiting on servers, timeouts and Celery peers, not on the CPU.
# Both lines of output are shown as they come, prefixed [sqlite] / [postgres]; a pass that fails
# is printed again in one piece at the end. Fails when either pass fails.
# Each pass spreads its tests over E2E_WORKERS pytest-xdist workers (default 2; each worker has its
# own servers, as a pass does): a test mostly waits, so four workers on two cores took a pass from
# ~10 to ~7.5 minutes here. E2E_WORKERS=0 runs each pass in one process.
# E2E_SERIAL=1 runs them one after the other; PYTEST_ARGS adds arguments to both.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:?usage: tests/e2e/run.sh SOMA_BIN [PYTHON]}
python=${2:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/soma-e2e.XXXXXX")

pass() {  # STORE: one pass, its output in $tmp/STORE.log and its exit code in $tmp/STORE.rc
  # shellcheck disable=SC2086
  SOMA_E2E_STORE=$1 SOMA_BIN=$bin "$python" -m pytest -q -p no:cacheprovider --basetemp="$tmp/$1" \
    -n "${E2E_WORKERS:-2}" --durations=15 ${PYTEST_ARGS:-} tests/e2e > "$tmp/$1.log" 2>&1
  echo $? > "$tmp/$1.rc"
}

show() {  # STORE PID: the log as it grows, prefixed, until the pass has exited
  touch "$tmp/$1.log"
  tail -n +1 -F --pid="$2" "$tmp/$1.log" 2>/dev/null | sed -u "s/^/[$1] /"
}

stores=(sqlite postgres)
if [ "${E2E_SERIAL:-0}" = 1 ]; then
  for s in "${stores[@]}"; do
    pass "$s" &
    show "$s" $!
    wait
  done
else
  pids=()
  for s in "${stores[@]}"; do
    pass "$s" &
    pids+=($!)
  done
  trap 'for p in "${pids[@]}"; do pkill -TERM -P "$p"; kill "$p"; done 2>/dev/null; wait; exit 130' INT TERM
  show sqlite "${pids[0]}" &
  show postgres "${pids[1]}" &
  wait
  trap - INT TERM
fi

failed=()
for s in "${stores[@]}"; do
  rc=$(cat "$tmp/$s.rc" 2>/dev/null || echo 1)
  [ "$rc" = 0 ] || failed+=("$s")
done
if [ ${#failed[@]} -eq 0 ]; then
  echo "e2e: both passes (sqlite, postgres) passed"
  rm -rf "$tmp"
  exit 0
fi
for s in "${failed[@]}"; do
  echo
  echo "======== e2e: the $s pass failed; its output in one piece ($tmp/$s.log) ========"
  cat "$tmp/$s.log"
done
echo "e2e: failed: ${failed[*]} (servers' logs under $tmp)"
exit 1
