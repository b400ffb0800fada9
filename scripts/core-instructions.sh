#!/usr/bin/env bash
# Instructions per request of the core micro-benchmark's variants, counted by callgrind: the
# same binary and inputs give the same count whatever else the machine is doing, so a change's
# cost is visible below the noise of timed runs.
#
#   ./scripts/core-instructions.sh [REQUESTS]      (default 200)
#
# Each variant runs twice under `valgrind --tool=callgrind` (REQUESTS requests, then 0); the
# difference over REQUESTS is printed as instructions per request.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-200}
command -v valgrind >/dev/null || { echo "core-instructions: needs valgrind" >&2; exit 2; }
cargo bench --bench core --no-run --quiet 2>/dev/null
bin=$(cargo bench --bench core --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "core":
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() {
    CORE_COUNT="$1:$2" valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" >/dev/null 2>"$out/log"
    grep -E "Collected" "$out/log" | awk '{print $NF}' | tr -d ,
}
for variant in nested merge merge_shaped; do
    with=$(total "$variant" "$requests")
    without=$(total "$variant" 0)
    echo "$variant: $(( (with - without) / requests )) instructions per request"
done
