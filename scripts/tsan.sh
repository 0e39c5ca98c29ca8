#!/usr/bin/env bash
# scripts/tsan.sh - the ThreadSanitizer pass (`make tsan`): builds build-tsan (-fsanitize=thread)
# and runs e2e files against it. A server that reported a race exits 66, which the e2e harness
# counts as a failure, so a race fails the run. tests/tsan.supp lists the reports of libraries we
# do not build with TSan (jansson's reference counts), one line of why each; a race in our code is
# fixed, not listed. Not part of `make test` (about 6 minutes on 2 cores).
#   scripts/tsan.sh [e2e files...]   (default: the chat, stream, task, memory and session files)
# SOMA_E2E_STORE=postgres runs them on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build-tsan/build.ninja ] || meson setup build-tsan --buildtype=debug -Db_sanitize=thread -Db_lundef=false
ninja -C build-tsan somaagent
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp halt_on_error=0 second_deadlock_stack=1 history_size=4"
if [ $# -eq 0 ]; then
  set -- tests/e2e/test_chat*.py tests/e2e/test_stream*.py tests/e2e/test_task*.py tests/e2e/test_memory*.py \
    tests/e2e/test_sessions*.py
fi
SOMA_E2E_STORE=${SOMA_E2E_STORE:-sqlite} SOMA_BIN=$PWD/build-tsan/somaagent \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider -n "${E2E_WORKERS:-2}" --basetemp="$(mktemp -d)" "$@"
