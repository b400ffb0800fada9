#!/usr/bin/env bash
# Bounded fuzzing of the filter's core with cargo fuzz (libFuzzer, nightly toolchain).
#
#   ./scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Targets (fuzz/fuzz_targets/): config (parsing and compiling any bytes), template (hostile
# client input rendered into paths, queries, headers and bodies: never injected),
# upstream_body (any upstream body through validation, splicing, parsing, shaping, layouts,
# joins: the answer is always JSON with unique keys), json_check (the splice-path validator
# against serde_json: it accepts exactly what serde_json accepts within the depth limit, but
# for repeated keys, which it refuses), shape_keys (routes built from colliding keys —
# layouts, meta names, as, derive, join, fallbacks — with hostile upstream bodies: every
# answer has unique keys at every level and the filter's own meta object) and json_number
# (the one JSON parse keeps every number's spelling; exact comparison and sums agree with
# bigdecimal). Seeds live
# in fuzz/seeds/<target>; the growing corpus in fuzz/corpus/<target> (git-ignored). A crash
# stops the run with a non-zero exit and leaves the input in fuzz/artifacts/<target>/: turn
# it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(config template upstream_body json_check shape_keys json_number)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: skipped: no nightly toolchain (cargo fuzz needs it; rustup toolchain install nightly)" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (once)"
    cargo install cargo-fuzz --locked --quiet
fi

for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    # grep hides libFuzzer's progress lines; the pipe status says whether the target crashed.
    set +e
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
        grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY|panicked|thread)|ERROR|DONE"
    status=${PIPESTATUS[0]}
    set -e
    if [[ $status -ne 0 ]]; then
        echo "fuzz: $target FAILED: see fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzz: all targets ran ${seconds}s without a crash"
