#!/usr/bin/env bash
# Validates every shipped Envoy config with `envoy --mode validate` (`make validate`).
#
#   ./scripts/validate-configs.sh              envoy/*.yaml (see below)
#   ./scripts/validate-configs.sh FILE...      just these files
#
# Checked by default: envoy/*.yaml and envoy/*.yml, except docker-compose*.yaml and
# anything under envoy/istio/ (Kubernetes manifests, not Envoy bootstraps), and the
# benchmark's Envoy configs in benches/envoy/.
#
# `--mode validate` builds the whole configuration without binding ports or
# starting workers, and that includes the wasm filter: Envoy loads the .wasm into
# the V8 runtime and calls the plugin's on_configure with its JSON configuration,
# so a configuration the filter rejects (unknown key, bad template, cycle, ...)
# fails validation, and the filter's one-line reason is printed. It cannot check
# that the clusters the calls name exist (the filter learns that only at request
# time, as reason `dispatch`). The .wasm must be built first (`make build`).
#
# Environment: ENVOY_BIN (default .venv/bin/envoy).
set -euo pipefail

cd "$(dirname "$0")/.."

ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
WASM=target/wasm32-wasip1/release/gateway_aggregator.wasm

if [[ $ENVOY_BIN != */* ]]; then
    ENVOY_BIN=$(command -v "$ENVOY_BIN" || true)
fi
if [[ -z $ENVOY_BIN || ! -x $ENVOY_BIN ]]; then
    echo "validate-configs: Envoy not found at '${ENVOY_BIN:-}': run 'make setup' (or set ENVOY_BIN)" >&2
    exit 2
fi
if [[ ! -f $WASM ]]; then
    echo "validate-configs: $WASM not found: run 'make build' first (validation loads the filter)" >&2
    exit 2
fi

files=()
if (($#)); then
    files=("$@")
else
    shopt -s nullglob
    for f in envoy/*.yaml envoy/*.yml benches/envoy/*.yaml; do
        case ${f##*/} in
            docker-compose*) continue ;;
        esac
        files+=("$f")
    done
    shopt -u nullglob
fi
if ((${#files[@]} == 0)); then
    echo "validate-configs: no Envoy configs found under envoy/" >&2
    exit 2
fi

failed=0
for f in "${files[@]}"; do
    if output=$("$ENVOY_BIN" --mode validate -c "$f" --disable-hot-restart \
        -l warning --component-log-level wasm:info 2>&1); then
        echo "OK    $f"
    else
        echo "FAIL  $f"
        # The filter's own reason first, then Envoy's error lines (all if none matched).
        reasons=$(grep -E 'configuration rejected|\]\[(error|critical)\]|^[^[]' <<<"$output" || true)
        while IFS= read -r line; do
            echo "      $line"
        done <<<"${reasons:-$output}"
        failed=$((failed + 1))
    fi
done

if ((failed)); then
    echo "validate-configs: $failed of ${#files[@]} config(s) failed"
    exit 1
fi
echo "validate-configs: all ${#files[@]} config(s) valid"
