#!/usr/bin/env bash
# make lint: formatting, static analysis and the project's own guards.
#  - clang-format: every C file matches .clang-format
#  - cppcheck: no warnings in src/
#  - no .c/.h file over 500 lines (split by topic before that)
#  - no getenv() outside src/core/config*
#  - none of STYLE.md's banned functions: sprintf strcpy strcat strtok atoi (and gets, vsprintf)
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
fail() { echo "lint: $*"; status=1; }

mapfile -t cfiles < <(git ls-files -co --exclude-standard -- 'src/*.c' 'src/*.h' 'tests/unit/*.c' 'tests/unit/*.h' 'tests/fuzz/*.c' | sort -u)

for f in "${cfiles[@]}"; do
  [ -f "$f" ] || continue
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    fail "$f is not clang-formatted (run: clang-format -i $f)"
  fi
  lines=$(wc -l < "$f")
  if [ "$lines" -gt 500 ]; then fail "$f has $lines lines; split it by topic (limit 500)"; fi
done

if grep -rnE '\bgetenv[[:space:]]*\(' src | grep -v '^src/core/config' ; then
  fail "getenv() outside src/core/config (read settings through the config table)"
fi

if grep -rnE '(^|[^a-z_])(sprintf|vsprintf|strcpy|strcat|strtok|atoi|gets)[[:space:]]*\(' src tests/unit tests/fuzz 2>/dev/null; then
  fail "banned function used (see STYLE.md: use snprintf, memcpy with lengths, strtol)"
fi

if ! cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
     --suppress=missingIncludeSystem -I src --std=c11 src 2>&1; then
  fail "cppcheck found problems"
fi

[ $status -eq 0 ] && echo "lint: ok (${#cfiles[@]} C files)"
exit $status
