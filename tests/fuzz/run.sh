#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR SECONDS [RUNS] - builds the libFuzzer harnesses with clang
# (ASan+UBSan) and runs each on a copy of its seed corpus for SECONDS, or until it has run RUNS
# inputs when RUNS is given (SECONDS is then the upper bound). `make test` runs 10 s each;
# `make fuzz` runs each for 1,000,000 inputs (FUZZ_RUNS). New crashes are left in BUILD_DIR/crashes.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build-fuzz}
secs=${2:-10}
runs_arg=()
[ -n "${3:-}" ] && runs_arg=(-runs="$3")
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" --buildtype=debug -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
if ! ninja -C "$dir" fuzz_http fuzz_config fuzz_multipart fuzz_api fuzz_sse fuzz_celery fuzz_json fuzz_h1 > "$dir/fuzz-build.log" 2>&1; then
  grep -v '^\[' "$dir/fuzz-build.log" | tail -40
  echo "fuzz: building the harnesses failed (log: $dir/fuzz-build.log)"
  exit 1
fi
mkdir -p "$dir/crashes"
# one harness per core at a time (each libFuzzer run is one process): the same SECONDS each, in
# half the wall time on two cores. FUZZ_JOBS overrides.
jobs=${FUZZ_JOBS:-$(nproc)}
run_one() {  # HARNESS: its result line, or the end of its log and where the reproducer is
  local h=$1 work runs out
  work=$(mktemp -d)
  cp tests/fuzz/corpus/$h/* "$work/"
  if ! "$dir/fuzz_$h" -max_total_time="$secs" "${runs_arg[@]}" -max_len=8192 -artifact_prefix="$dir/crashes/" \
       -print_final_stats=1 "$work" > "$dir/fuzz_$h.log" 2>&1; then
    out=$(tail -40 "$dir/fuzz_$h.log")
    printf '%s\nfuzz: fuzz_%s found a failure; reproducer in %s/crashes/\n' "$out" "$h" "$dir"
    rm -rf "$work"
    return 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/fuzz_$h.log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: fuzz_$h ran $runs inputs, no failure"
  rm -rf "$work"
}
failed=0
harnesses=(http config multipart api sse celery json h1)
for ((i = 0; i < ${#harnesses[@]}; i += jobs)); do
  pids=()
  for h in "${harnesses[@]:i:jobs}"; do
    run_one "$h" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p" || failed=1
  done
done
exit $failed
