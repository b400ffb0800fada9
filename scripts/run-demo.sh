#!/usr/bin/env bash
# The gateway-aggregator demo (`make run`): starts the demo upstream services
# (envoy/upstreams.yaml) and the gateway (envoy/gateway.yaml) with the wasm filter,
# waits until both are ready, prints curl commands to try, and runs until Ctrl-C.
# On exit it stops exactly the two Envoy processes it started.
#
#   ./scripts/run-demo.sh                   interactive demo on 127.0.0.1:10000
#   DEMO_SELFTEST=1 ./scripts/run-demo.sh   start, check the demo answers, stop;
#                                           exit status 0 only if every check passes
#
# Environment: ENVOY_BIN (default .venv/bin/envoy), DEMO_KEEP_LOGS=1 keeps the log
# directory after exit (it is always kept when something fails).
set -euo pipefail

cd "$(dirname "$0")/.."

ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
WASM=target/wasm32-wasip1/release/gateway_aggregator.wasm
GATEWAY=127.0.0.1:10000
GATEWAY_ADMIN=127.0.0.1:9901
UPSTREAMS_ADMIN=127.0.0.1:9902
PORTS=(10000 9901 10101 10102 10103 10104 9902)
SELFTEST=${DEMO_SELFTEST:-0}
READY_TIMEOUT_S=15

say() { printf '%s\n' "$*"; }
die() { printf 'run-demo: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- preconditions
[[ -f $WASM ]] || die "$WASM not found: run 'make build' first"
if [[ $ENVOY_BIN != */* ]]; then
    ENVOY_BIN=$(command -v "$ENVOY_BIN" || true)
fi
[[ -n $ENVOY_BIN && -x $ENVOY_BIN ]] || die "Envoy not found at '${ENVOY_BIN:-}': run 'make setup' (or set ENVOY_BIN)"
HAVE_CURL=0
command -v curl >/dev/null 2>&1 && HAVE_CURL=1

# A port is taken if something accepts a connection on it.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
busy=()
for port in "${PORTS[@]}"; do
    if port_in_use "$port"; then busy+=("$port"); fi
done
if ((${#busy[@]})); then
    die "port(s) ${busy[*]} on 127.0.0.1 already in use (another demo still running?). \
Find the owner with 'ss -ltnp' or 'lsof -iTCP -sTCP:LISTEN', stop it, and retry."
fi

# ---------------------------------------------------------------- process control
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gateway-demo.XXXXXX")
UPSTREAMS_PID=
GATEWAY_PID=
SLEEP_PID=
KEEP_LOGS=${DEMO_KEEP_LOGS:-0}

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL; always reaps
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    [[ -n $SLEEP_PID ]] && { kill "$SLEEP_PID" 2>/dev/null || true; wait "$SLEEP_PID" 2>/dev/null || true; }
    if [[ -n $GATEWAY_PID || -n $UPSTREAMS_PID ]]; then
        ((SELFTEST)) || printf '\n%s\n' "Stopping Envoy (gateway pid ${GATEWAY_PID:--}, upstreams pid ${UPSTREAMS_PID:--})..."
        stop_pid "$GATEWAY_PID"
        stop_pid "$UPSTREAMS_PID"
    fi
    if ((status == 0 || status == 130 || status == 143)) && ((!KEEP_LOGS)); then
        rm -rf "$LOG_DIR"
    else
        say "Envoy logs kept in $LOG_DIR" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_envoy() { # start_envoy NAME CONFIG: starts Envoy in the background, sets LAST_PID
    "$ENVOY_BIN" -c "$2" \
        --concurrency 2 --disable-hot-restart --use-dynamic-base-id \
        -l warning --component-log-level wasm:info \
        </dev/null >"$LOG_DIR/$1.log" 2>&1 &
    LAST_PID=$!
}

log_tail() { # log_tail NAME
    say "--- last lines of $LOG_DIR/$1.log ---" >&2
    tail -n 25 "$LOG_DIR/$1.log" >&2 || true
}

# http_get HOSTPORT PATH: prints the raw response (status line, headers, blank line, body).
http_get() {
    if ((HAVE_CURL)); then
        curl -sS -i --noproxy '*' --max-time 5 "http://$1$2"
    else
        local host=${1%:*} port=${1##*:}
        exec 3<>"/dev/tcp/$host/$port" || return 1
        printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
        cat <&3
        exec 3<&-
    fi
}

# wait_ready NAME PID ADMIN: polls the admin /ready until 200 (state LIVE).
wait_ready() {
    local name=$1 pid=$2 admin=$3 i
    for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail "$name"
            die "the $name Envoy exited during startup (see its log above)"
        fi
        if http_get "$admin" /ready 2>/dev/null | head -n 1 | grep -q ' 200'; then
            return 0
        fi
        sleep 0.1
    done
    log_tail "$name"
    die "the $name Envoy was not ready after ${READY_TIMEOUT_S}s"
}

# ---------------------------------------------------------------- start
start_envoy upstreams envoy/upstreams.yaml
UPSTREAMS_PID=$LAST_PID
start_envoy gateway envoy/gateway.yaml
GATEWAY_PID=$LAST_PID
wait_ready upstreams "$UPSTREAMS_PID" "$UPSTREAMS_ADMIN"
wait_ready gateway "$GATEWAY_PID" "$GATEWAY_ADMIN"

# ---------------------------------------------------------------- self-test
if ((SELFTEST)); then
    failures=0
    # check LABEL PATH STATUS COMPLETE: COMPLETE is the expected x-aggregation-complete
    # header ("-": not checked).
    check() {
        local label=$1 path=$2 want_status=$3 want_complete=$4 response status complete ctype attempt
        # Up to 3 attempts: on a machine busy with other work, a call can miss its
        # 100 ms budget now and then; that is the filter doing its job, not a broken demo.
        for attempt in 1 2 3; do
            response=$(http_get "$GATEWAY" "$path" 2>&1 | tr -d '\r') || true
            status=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$response")
            complete=$(sed -n '/^$/q; s/^[Xx]-[Aa]ggregation-[Cc]omplete: *//p' <<<"$response")
            ctype=$(sed -n '/^$/q; s/^[Cc]ontent-[Tt]ype: *//p' <<<"$response")
            if [[ $status == "$want_status" && ($want_complete == - || $complete == "$want_complete") &&
                $ctype == application/json* ]]; then
                break
            fi
            attempt=
        done
        if [[ -n $attempt ]]; then
            say "PASS  $label: GET $path -> $status, x-aggregation-complete: ${complete:-(none)}$( ((attempt == 1)) || echo " (attempt $attempt)")"
        else
            say "FAIL  $label: GET $path -> status '${status}', x-aggregation-complete '${complete}', content-type '${ctype}'"
            say "      (want $want_status, x-aggregation-complete $want_complete, application/json)"
            say "      response: $(head -c 600 <<<"$response" | tr '\n' ' ')"
            failures=$((failures + 1))
        fi
    }
    say "Demo self-test against http://$GATEWAY"
    check "complete answer" /api/products/42 200 true
    check "partial answer (reviews times out, fallback)" /api/products/slow 200 false
    check "required call's 404 passed through" /api/products/missing 404 -
    check "currency query" "/api/products/42?currency=USD" 200 true
    check "dependent call (stock by product sku)" /api/products/42/summary 200 true
    # The gateway's clusters speak HTTP/2 (envoy/gateway.yaml): every call above reached the
    # services' Envoy as an HTTP/2 request, none as HTTP/1.1 (it counts both per listener).
    stats=$(http_get "$UPSTREAMS_ADMIN" '/stats?filter=downstream_rq_http' 2>&1 | tr -d '\r') || true
    protocols= h2_ok=1
    for service in catalog inventory pricing reviews; do
        h1=$(sed -n "s/^http\.$service\.downstream_rq_http1_total: *//p" <<<"$stats")
        h2=$(sed -n "s/^http\.$service\.downstream_rq_http2_total: *//p" <<<"$stats")
        [[ $h1 == 0 && $h2 =~ ^[1-9][0-9]*$ ]] || h2_ok=0
        protocols+="${protocols:+, }$service ${h2:-?} HTTP/2 + ${h1:-?} HTTP/1.1"
    done
    if ((h2_ok)); then
        say "PASS  calls to the services over HTTP/2: $protocols"
    else
        say "FAIL  calls to the services over HTTP/2: $protocols"
        say "      (want only HTTP/2 requests at every service: see the clusters in envoy/gateway.yaml)"
        failures=$((failures + 1))
    fi
    if ((failures)); then
        log_tail gateway
        say "Demo self-test: FAIL ($failures check(s) failed)"
        exit 1
    fi
    say "Demo self-test: PASS"
    exit 0
fi

# ---------------------------------------------------------------- interactive
cat <<EOF

Gateway ready on http://$GATEWAY (admin http://$GATEWAY_ADMIN).
Upstream services: catalog :10101, inventory :10102, pricing :10103, reviews :10104
(admin http://$UPSTREAMS_ADMIN). Logs: $LOG_DIR (removed on exit; DEMO_KEEP_LOGS=1 keeps them)

Try these:

  # A complete answer: product, inventory, pricing and reviews fetched in parallel, one JSON.
  curl -s localhost:10000/api/products/42 | python3 -m json.tool

  # The same with headers: x-aggregation-complete: true and a server-timing entry per call.
  curl -si localhost:10000/api/products/42

  # A partial answer: reviews takes 500 ms, is cut at its 150 ms timeout, and its fallback
  # stands in; _meta lists the error, x-aggregation-complete: false, cache-control: no-store.
  curl -si localhost:10000/api/products/slow

  # The required product call gets 404 from the catalog: the client gets that 404 and its body.
  curl -si localhost:10000/api/products/missing

  # A query value flows into a call's path: pricing is asked for ?currency=USD (default EUR).
  curl -s 'localhost:10000/api/products/42?currency=USD' | python3 -m json.tool

  # A dependent call: stock is fetched with the sku from the product call's body.
  curl -s localhost:10000/api/products/42/summary | python3 -m json.tool

  # The gateway's calls reach the services over HTTP/2 (h2c); their Envoy counts requests
  # by protocol (your own curl requests to :10101-10104 are the HTTP/1.1 ones):
  curl -s 'localhost:9902/stats?filter=downstream_rq_http'

  # Envoy's wasm stats (metrics a plugin defines itself are named wasmcustom.*), and the log:
  curl -s localhost:9901/stats | grep -i wasm
  tail -f $LOG_DIR/gateway.log

Press Ctrl-C to stop.
EOF

while true; do
    if ! kill -0 "$UPSTREAMS_PID" 2>/dev/null; then
        log_tail upstreams
        die "the upstreams Envoy exited unexpectedly"
    fi
    if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        log_tail gateway
        die "the gateway Envoy exited unexpectedly"
    fi
    # Backgrounded so that a signal interrupts `wait` at once and the trap runs.
    sleep 1 &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
    SLEEP_PID=
done
