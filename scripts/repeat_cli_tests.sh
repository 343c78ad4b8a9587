#!/usr/bin/env bash
# The CLI bad-input tests, N times in a row (default 20), each run in a fresh interpreter with its own hash seed and
# an empty bytecode cache (as right after a fresh install); stops at the first failing run and prints how to replay
# it. Not part of every CI run: docs/robustness.md ("No flaky checks").
#   scripts/repeat_cli_tests.sh [N] [pytest args...]     e.g. scripts/repeat_cli_tests.sh 20 -k "errors or corrupt"
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"; shift || true
args=("$@"); [ ${#args[@]} -gt 0 ] || args=(tests/cli/test_cli.py)
for i in $(seq 1 "$runs"); do
  seed=$(( (RANDOM << 15 | RANDOM) % 4294967295 ))
  cache=$(mktemp -d /tmp/deploykit-pycache.XXXXXX)
  start=$(date +%s)
  if ! PYTHONHASHSEED="$seed" PYTHONPYCACHEPREFIX="$cache" python3 -m pytest -q -p no:cacheprovider "${args[@]}" \
      > "$cache/log" 2>&1; then
    tail -40 "$cache/log"
    echo "run $i of $runs FAILED; replay: PYTHONHASHSEED=$seed PYTHONPYCACHEPREFIX=\$(mktemp -d) python3 -m pytest ${args[*]}"
    exit 1
  fi
  echo "run $i/$runs passed ($(tail -1 "$cache/log" | tr -s ' ')) in $(( $(date +%s) - start )) s, PYTHONHASHSEED=$seed"
  rm -rf "$cache"
done
echo "all $runs runs passed"
