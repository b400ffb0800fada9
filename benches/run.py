#!/usr/bin/env python3
"""The gateway benchmark (`make bench`): the filter against the floor under it, plain Envoy, the
peers users compare it with (Envoy Lua, a Node.js BFF and a compiled BFF, each alone and
behind an Envoy hop, nginx + njs), side by side in one run, same upstreams, same load
generator (wrk).

Started here, stopped here (by pid, also on Ctrl-C and on errors):
  upstreams     benches/envoy/upstreams.yaml       Envoy --concurrency 2, ports 18101..18104
  filter        benches/envoy/gateway-filter.yaml  Envoy --concurrency 1, port 18001
  plain         benches/envoy/gateway-plain.yaml   Envoy --concurrency 1, port 18002
  node          benches/node/bff.js                one Node.js process, port 18004
  lua           benches/envoy/gateway-lua.yaml     Envoy --concurrency 1, port 18005
  filter-h2     gateway-filter.yaml, HTTP/2 to a..d Envoy --concurrency 1, port 18006
  plain-h2      gateway-plain.yaml, HTTP/2 to a     Envoy --concurrency 1, port 18007
                (both derived at run time: the same configs with the clusters speaking HTTP/2)
  floor         benches/floor/gateway-floor.yaml   Envoy --concurrency 1, ports 18008 (/0ms),
                                                   18009 (/delay): the bare dispatch-only filter
  hop           benches/envoy/gateway-hop.yaml     Envoy --concurrency 1, a plain route in front
                                                   of a BFF: 18010 -> node, 18011 -> rust-bff
  rust-bff      benches/bff-rust (hyper + tokio)   one thread, port 18012
  nginx         benches/nginx/nginx.conf + agg.js  master + one worker, port 18013 (skipped,
                                                   with a note, when nginx/njs cannot be had)
The floor's .wasm and the Rust BFF are built by `make bench` (target/bench-peers/); wrk and,
for the nginx row, Debian's nginx and libnginx-mod-http-js are installed with apt-get when
missing and running as root.

Scenarios (wrk -t1 --latency, every row warmed up first, rows interleaved in every round):
  a  upstreams at 0 ms: throughput and CPU per aggregation at saturation (-c32)
  b  upstreams at 20/40/60/80 ms: latency at moderate load (-c8), against plain Envoy to the
     slowest upstream (d) and d measured directly
  c  call d takes 1000 ms and times out at 200 ms (-c8): answer time against the timeout
  d  a hot path (-c64): one GET call to upstream a at 20 ms, on two filter routes identical but
     for "coalesce": true; upstream hits per second (upstream a's http.a.downstream_rq_total
     from its admin /stats, before and after the run) with and without coalescing; plain Envoy
     proxying the same clients to a for reference

CPU per request is summed over every process in the request path (a deployment row counts the
Envoy hop and the BFF), from /proc. Writes BENCHMARKS.md (keeping its "## Notes" section) and
prints the ratios with their targets (issue 14).

Environment:
  DURATION=10     seconds per measured run       QUICK=1        2 s runs, 1 s warm-ups
  WARMUP=2        seconds of warm-up per run     ROUNDS=1       interleaved rounds (median)
  SCENARIOS=a,b,c,d scenarios to run             OUTPUT=BENCHMARKS.md  report ("-": none)
  CONNECTIONS_A=32, CONNECTIONS_B=8, CONNECTIONS_C=8, CONNECTIONS_D=64, WRK_THREADS=1
  ROWS=fanout,floor,plain,pass  only these rows (by key; default every row): a focused A/B
  ENVOY_BIN (default .venv/bin/envoy), NODE_BIN (default node), NGINX_BIN (default nginx;
  NGINX_BIN=none skips the nginx row), KEEP_LOGS=1 keeps the logs,
  CORE=1 also runs the criterion micro-benchmark (cargo bench --bench core) into the report,
  STRICT=1 exits 3 when a target is missed.
Exit status: 0 every scenario ran clean; 1 a scenario failed (non-2xx, socket errors, a wrong
answer, a process died); 2 a precondition is missing; 3 STRICT=1 and a target was missed.

Python 3.11 standard library only.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "target/wasm32-wasip1/release/gateway_aggregator.wasm"
HOST = "127.0.0.1"

UPSTREAM_PORTS = {"a": 18101, "b": 18102, "c": 18103, "d": 18104}
UPSTREAM_ADMIN = 18190
FILTER_PORT, FILTER_ADMIN = 18001, 18091
PLAIN_PORT, PLAIN_ADMIN = 18002, 18092
NODE_PORT = 18004
LUA_PORT, LUA_ADMIN = 18005, 18095
FILTER_H2_PORT, FILTER_H2_ADMIN = 18006, 18096
PLAIN_H2_PORT, PLAIN_H2_ADMIN = 18007, 18097
FLOOR_PORT, FLOOR_DELAY_PORT, FLOOR_ADMIN = 18008, 18009, 18098
HOP_NODE_PORT, HOP_RUST_PORT, HOP_ADMIN = 18010, 18011, 18099
RUST_BFF_PORT = 18012
NGINX_PORT = 18013
ALL_PORTS = [*UPSTREAM_PORTS.values(), UPSTREAM_ADMIN, FILTER_PORT, FILTER_ADMIN, PLAIN_PORT,
             PLAIN_ADMIN, NODE_PORT, LUA_PORT, LUA_ADMIN, FILTER_H2_PORT, FILTER_H2_ADMIN,
             PLAIN_H2_PORT, PLAIN_H2_ADMIN, FLOOR_PORT, FLOOR_DELAY_PORT, FLOOR_ADMIN,
             HOP_NODE_PORT, HOP_RUST_PORT, HOP_ADMIN, RUST_BFF_PORT, NGINX_PORT]

# The peers `make bench` builds (benches/floor, benches/bff-rust).
PEERS_DIR = ROOT / "target/bench-peers"
FLOOR_WASM = PEERS_DIR / "wasm32-wasip1/release/bench_floor.wasm"
RUST_BFF = PEERS_DIR / "release/bench-bff"
NJS_MODULES = [Path("/usr/lib/nginx/modules/ngx_http_js_module.so"),
               Path("/usr/share/nginx/modules/ngx_http_js_module.so")]

# Who each process is in the report.
PROCESS_LABELS = {"filter": "Envoy + filter", "plain": "Envoy", "lua": "Envoy + Lua",
                  "filter-h2": "Envoy + filter", "plain-h2": "Envoy", "floor": "Envoy + floor",
                  "hop": "Envoy hop", "node": "Node", "rust-bff": "Rust BFF", "nginx": "nginx"}

SLOWEST_MS = 80.0  # scenario b: the slowest upstream (d)
CALL_TIMEOUT_MS = 200  # scenario c: call d's timeout (as in gateway-filter.yaml, bff.js, gateway-lua.yaml)
HOT_MS = 20.0  # scenario d: upstream a's /delay, the hot path's one call
HOT_CHECK_CLIENTS = 8  # scenario d: clients sent at once before the run to check coalescing
FILTER_STATS_FLUSH_S = 1.2  # the filter flushes its counters to Envoy once a second (src/host/worker.rs)
READY_TIMEOUT_S = 60.0

# Targets (issue 14; they replace issue 7's). Each is computed per interleaved round and the
# median over rounds is reported.
TARGET_VS_FLOOR = 1.08  # ours / floor, CPU per aggregation: at most
TARGET_VS_LUA = 1.00  # ours / Envoy Lua, CPU per aggregation: at most
TARGET_EXCHANGE = 0.62  # (ours req/s x 5) / (plain req/s x 2): at least
TARGET_NODE_HOP = 1.5  # (Envoy hop + Node) / ours, CPU per aggregation: at least
TARGET_PASSTHROUGH = 0.85  # pass-through req/s / plain req/s: at least
TARGET_ADDED_P50_MS = 0.5  # scenario b: ours p50 - plain Envoy to d p50: at most
WASM_BYTES_ISSUE_7 = 500_000  # issue 7's size limit, reported for information


# ---------------------------------------------------------------------------- settings

def say(text: str = "") -> None:
    print(text, flush=True)


class Fatal(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def die(message: str, status: int = 1):
    raise Fatal(message, status)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value.rstrip("s"))
    except ValueError:
        print(f"bench: {name}={value!r} is not a number", file=sys.stderr)
        sys.exit(2)


def env_int(name: str, default: int) -> int:
    return int(env_float(name, default))


QUICK = os.environ.get("QUICK", "") not in ("", "0")
# wrk takes whole seconds.
DURATION = max(1, round(env_float("DURATION", 2 if QUICK else 10)))
WARMUP = max(0, round(env_float("WARMUP", 1 if QUICK else 2)))
ROUNDS = max(1, env_int("ROUNDS", 1))
SCENARIOS = [s.strip() for s in os.environ.get("SCENARIOS", "a,b,c,d").split(",") if s.strip()]
CONNECTIONS = {
    "a": env_int("CONNECTIONS_A", 32),
    "b": env_int("CONNECTIONS_B", 8),
    "c": env_int("CONNECTIONS_C", 8),
    "d": env_int("CONNECTIONS_D", 64),
}
WRK_THREADS = max(1, env_int("WRK_THREADS", 1))
ROWS = {r.strip() for r in os.environ.get("ROWS", "").split(",") if r.strip()}
OUTPUT = os.environ.get("OUTPUT", "BENCHMARKS.md")
KEEP_LOGS = os.environ.get("KEEP_LOGS", "") not in ("", "0")
STRICT = os.environ.get("STRICT", "") not in ("", "0")
CORE = os.environ.get("CORE", "") not in ("", "0")
ENVOY_BIN = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv/bin/envoy")
NODE_BIN = os.environ.get("NODE_BIN") or "node"
NGINX_BIN = os.environ.get("NGINX_BIN") or "nginx"


# ---------------------------------------------------------------------------- processes

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


class Processes:
    """Everything this run started; stopped by pid, newest first."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str]) -> Proc:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            # A session of its own: a Ctrl-C reaches this script only, which then stops the
            # children itself, in order.
            popen = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                tail(proc)
                die(f"{proc.name} (pid {proc.popen.pid}) exited with status {proc.popen.returncode}")

    def stop(self, proc: Proc) -> None:
        """Stops a process by pid, and then, by pid, any of its children still alive (nginx's
        worker, should its master not have stopped it)."""
        children = descendants(proc.popen.pid)
        stop(proc.popen)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)
        self.procs.clear()


def stop(popen: subprocess.Popen, grace_s: float = 5.0) -> None:
    if popen.poll() is not None:
        return
    try:
        os.kill(popen.pid, signal.SIGTERM)
        popen.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.kill(popen.pid, signal.SIGKILL)
        popen.wait()
    except ProcessLookupError:
        pass


def tail(proc: Proc, lines: int = 25) -> None:
    try:
        text = proc.log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    say(f"--- last lines of {proc.log} ---")
    for line in text:
        say(f"  {line}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The pids of a process's children, their children, ... alive now (from /proc)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if int(child) not in found:
                        found.append(int(child))
                        todo.append(int(child))
        except (OSError, ValueError):
            pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants alive now (nginx's master and worker)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in descendants(pid))


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes, float]:
    """One GET (no proxy, whatever the environment says): status, headers, body, seconds."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, body, time.monotonic() - started
    finally:
        conn.close()


def wait_envoy_ready(procs: Processes, proc: Proc, admin: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            tail(proc)
            die(f"the {proc.name} Envoy exited during startup (see its log above)")
        try:
            if http_get(admin, "/ready", timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    tail(proc)
    die(f"the {proc.name} Envoy was not ready after {READY_TIMEOUT_S:.0f} s")


def wait_port(proc: Proc, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            tail(proc)
            die(f"{proc.name} exited during startup (see its log above)")
        if port_open(port):
            return
        time.sleep(0.1)
    tail(proc)
    die(f"{proc.name} did not listen on {port} after {READY_TIMEOUT_S:.0f} s")


def envoy_argv(config: str, concurrency: int) -> list[str]:
    return [ENVOY_BIN, "-c", config, "--concurrency", str(concurrency), "--disable-hot-restart",
            "--use-dynamic-base-id", "-l", "warning"]


# ---------------------------------------------------------------------------- preconditions

def apt_install(packages: list[str]) -> bool:
    """apt-get install, when running as root on a machine that has it; an `apt-get update`
    and a second try when the first fails. True when apt-get succeeded."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    say(f"installing the Debian package(s) {' '.join(packages)} (apt-get install -y)...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "env": env}
    if subprocess.run(["apt-get", "install", "-y", *packages], **quiet).returncode == 0:
        return True
    subprocess.run(["apt-get", "update"], **quiet)
    return subprocess.run(["apt-get", "install", "-y", *packages], **quiet).returncode == 0


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk not found.")
        apt_install(["wrk"])
        wrk = shutil.which("wrk")
        if wrk:
            return wrk
        die("could not install wrk with apt-get; install it yourself and retry", 2)
    die("wrk (the HTTP load generator) is not installed. Install it, e.g. "
        "'sudo apt-get install wrk' (Debian/Ubuntu) or 'brew install wrk', and retry.", 2)


@dataclass
class Nginx:
    """The nginx + njs peer: where it is, or why it is skipped."""
    binary: str = ""
    module: str = ""
    skipped: str = ""


def find_nginx() -> Nginx:
    """nginx and its njs module (Debian's nginx and libnginx-mod-http-js), installed with
    apt-get when missing. Never fatal: the nginx row is for information and is skipped, with
    the reason in the report, where they cannot be had."""
    if NGINX_BIN == "none":
        return Nginx(skipped="skipped: NGINX_BIN=none")

    def located() -> Nginx | None:
        binary = NGINX_BIN if "/" in NGINX_BIN else (shutil.which(NGINX_BIN) or "")
        module = next((m for m in NJS_MODULES if m.is_file()), None)
        if binary and os.access(binary, os.X_OK) and module:
            return Nginx(binary, str(module))
        return None

    found = located()
    if found:
        return found
    if apt_install(["nginx", "libnginx-mod-http-js"]):
        found = located()
        if found:
            return found
        return Nginx(skipped="skipped: apt-get installed nginx and libnginx-mod-http-js, but "
                     f"{NGINX_BIN!r} or ngx_http_js_module.so is still not found")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return Nginx(skipped="skipped: 'apt-get install nginx libnginx-mod-http-js' failed")
    return Nginx(skipped="skipped: nginx with the njs module is not installed and could not be "
                 "installed here (needs root and apt-get: Debian's nginx and "
                 "libnginx-mod-http-js)")


def preconditions() -> tuple[str, str, Nginx]:
    if not WASM.is_file():
        die(f"{WASM.relative_to(ROOT)} not found: run 'make build' first", 2)
    for built in (FLOOR_WASM, RUST_BFF):
        if not built.is_file():
            die(f"{built.relative_to(ROOT)} not found: run 'make bench' (it builds the floor "
                "filter and the Rust BFF; 'make bench-peers' builds only them)", 2)
    envoy = ENVOY_BIN if "/" in ENVOY_BIN else (shutil.which(ENVOY_BIN) or "")
    if not (envoy and os.access(envoy, os.X_OK)):
        die(f"Envoy not found at {ENVOY_BIN!r}: run 'make setup' (or set ENVOY_BIN)", 2)
    node = shutil.which(NODE_BIN)
    if not node:
        die(f"Node.js not found ({NODE_BIN!r}): install Node.js (or set NODE_BIN)", 2)
    wrk = find_wrk()
    busy = [p for p in ALL_PORTS if port_open(p)]
    if busy:
        die(f"port(s) {', '.join(map(str, busy))} on {HOST} already in use (another benchmark "
            "still running?). Find the owner with 'ss -ltnp', stop it, and retry.", 2)
    nginx = find_nginx()
    if nginx.skipped:
        say(f"nginx + njs row {nginx.skipped}")
    return node, wrk, nginx


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def machine_info(node: str, wrk: str, nginx: Nginx) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    envoy = version([ENVOY_BIN, "--version"])
    envoy = envoy.split("version:", 1)[-1].strip()
    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src",
                            "Cargo.toml"], capture_output=True, text=True).stdout.strip()
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = ["?"]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "envoy": envoy,
        "node": version([node, "--version"]),
        "wrk": version([wrk, "--version"]).split(" Copyright")[0],
        "nginx": nginx.skipped or (
            version([nginx.binary, "-v"]).split("version:", 1)[-1].strip() + ", njs "
            + version(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-http-js"])),
        "rustc": version(["rustc", "--version"]),
        "python": platform.python_version(),
        "commit": commit + (" (with uncommitted changes in src/ or Cargo.toml)" if dirty else ""),
        "loadavg": " ".join(load),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------------- correctness

def check_json(port: int, path: str, expect: str) -> str | None:
    """None when the answer is right, else what is wrong. `expect`: 'aggregate' (a..d),
    'timeout' (a..c, not d, answered after about 200 ms), 'single' (service a), 'single-d',
    'hot' (the filter's answer from one call a, not marked coalesced: a request alone shares
    nothing)."""
    try:
        status, headers, body, seconds = http_get(port, path)
    except OSError as e:
        return f"GET {path}: {e}"
    if status != 200:
        return f"GET {path}: status {status}: {body[:200]!r}"
    try:
        value = json.loads(body)
    except ValueError:
        return f"GET {path}: not JSON: {body[:200]!r}"
    if not isinstance(value, dict):
        return f"GET {path}: not a JSON object: {body[:200]!r}"
    if expect in ("single", "single-d"):
        want = "d" if expect == "single-d" else "a"
        return None if value.get("service") == want else f"GET {path}: not service {want}: {body[:200]!r}"
    if expect == "hot":
        return hot_problem(path, value, body, coalesced=False)
    names = "abcd" if expect == "aggregate" else "abc"
    for name in names:
        part = value.get(name)
        if not (isinstance(part, dict) and part.get("service") == name):
            return f"GET {path}: call {name} missing or wrong: {body[:300]!r}"
    if expect == "timeout":
        if value.get("d") is not None:
            return f"GET {path}: call d should have timed out: {body[:300]!r}"
        if headers.get("x-aggregation-complete") != "false":
            return f"GET {path}: x-aggregation-complete is {headers.get('x-aggregation-complete')!r}"
        if not 0.15 <= seconds <= 0.9:
            return f"GET {path}: answered after {seconds * 1000:.0f} ms, expected about 200 ms"
    return None


def hot_problem(path: str, value: dict, body: bytes, coalesced: bool | None) -> str | None:
    """What is wrong with a hot-path answer (scenario d): call a must be service a, and
    `_meta.coalesced` must be ["a"] (coalesced True), absent (False), or either (None)."""
    part = value.get("a")
    if not (isinstance(part, dict) and part.get("service") == "a"):
        return f"GET {path}: call a missing or wrong: {body[:300]!r}"
    meta = value.get("_meta")
    marked = meta.get("coalesced") if isinstance(meta, dict) else None
    if coalesced is True and marked != ["a"]:
        return f"GET {path}: _meta.coalesced should be [\"a\"]: {body[:300]!r}"
    if coalesced is False and marked is not None:
        return f"GET {path}: _meta.coalesced should be absent: {body[:300]!r}"
    return None


def admin_counters(admin: int, contains: str) -> dict[str, int]:
    """The counters of an Envoy whose name contains `contains`, from its admin /stats."""
    status, _, body, _ = http_get(admin, f"/stats?filter={contains}")
    if status != 200:
        die(f"admin {admin}: GET /stats answered {status}")
    out = {}
    for line in body.decode(errors="replace").splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().isdigit():
            out[name.strip()] = int(value)
    return out


def upstream_hits(listener: str) -> int:
    """Requests that reached one upstream listener (benches/envoy/upstreams.yaml): its HTTP
    connection manager's downstream_rq_total (stat_prefix = the listener's name), counted when
    the request's headers arrive."""
    name = f"http.{listener}.downstream_rq_total"
    counters = admin_counters(UPSTREAM_ADMIN, name)
    if name not in counters:
        die(f"the upstream Envoy has no counter {name}")
    return counters[name]


def filter_route_stats(admin: int, route: str) -> dict[str, int]:
    """The filter's counters of one route ('requests', 'call.a.attempts', 'call.a.coalesced',
    ...). The filter hands its counts to Envoy at most once a second (on its tick): read them
    FILTER_STATS_FLUSH_S after the traffic that should be in them."""
    prefix = f"wasmcustom.gateway_aggregator.route.{route}."
    counters = admin_counters(admin, prefix)
    return {name[len(prefix):]: value for name, value in counters.items() if name.startswith(prefix)}


def check_hot_at_once(row: "Row", clients: int = HOT_CHECK_CLIENTS) -> str | None:
    """Scenario d, before the run: `clients` identical requests at once. Every answer must be
    right; with coalesce, fewer than `clients` reach upstream a and the answers that shared
    another's request say so in `_meta.coalesced`; without, every one reaches it and none is
    marked."""
    barrier = threading.Barrier(clients)
    answers: list = [None] * clients

    def client(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            answers[i] = http_get(row.port, row.path)
        except (OSError, threading.BrokenBarrierError) as e:
            answers[i] = e

    before = upstream_hits(row.hits_on)
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    hits = upstream_hits(row.hits_on) - before
    marked = 0
    for answer in answers:
        if not isinstance(answer, tuple):
            return f"{clients} GET {row.path} at once: {answer!r}"
        status, _, body, _ = answer
        if status != 200:
            return f"{clients} GET {row.path} at once: status {status}: {body[:200]!r}"
        try:
            value = json.loads(body)
        except ValueError:
            return f"{clients} GET {row.path} at once: not JSON: {body[:200]!r}"
        if not isinstance(value, dict):
            return f"{clients} GET {row.path} at once: not a JSON object: {body[:200]!r}"
        problem = hot_problem(row.path, value, body, None if row.coalesce else False)
        if problem:
            return f"{clients} at once: {problem}"
        marked += bool((value.get("_meta") or {}).get("coalesced"))
    if row.coalesce:
        if not marked:
            return (f"{clients} GET {row.path} at once: no answer carries _meta.coalesced "
                    f"({hits} upstream hits)")
        if hits >= clients:
            return f"{clients} GET {row.path} at once reached upstream {row.hits_on} {hits} times"
    elif hits != clients:
        return (f"{clients} GET {row.path} at once (no coalesce) reached upstream "
                f"{row.hits_on} {hits} times")
    say(f"  {row.label:<37} check: {clients} at once -> {hits} upstream hit(s), "
        f"{marked} answer(s) marked _meta.coalesced")
    return None


# ---------------------------------------------------------------------------- wrk

@dataclass
class Row:
    key: str
    label: str
    port: int
    path: str
    expect: str
    # The processes in the request path (names in start_all's pids) whose CPU is counted:
    # one gateway, or the Envoy hop and the BFF behind it; () for a reference row.
    cpu: tuple[str, ...]
    floor_ms: float = 0.0
    reference: bool = False  # not a gateway: a reference row
    kind: str = "gateway"  # "gateway", "floor", "deployment", "information", "peer" (report column)
    # Scenario d: the upstream listener whose requests are counted (its stat_prefix), whether
    # the route coalesces, and the filter route whose stats are read (its one call is a).
    hits_on: str = ""
    coalesce: bool = False
    stats_route: str = ""


@dataclass
class Result:
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    gw_cpu: float = 0.0  # fraction of one core
    up_cpu: float = 0.0
    wrk_cpu: float = 0.0
    busy: float = 0.0  # the whole machine, in cores
    parts: dict[str, float] = field(default_factory=dict)  # gw_cpu by process
    problems: list[str] = field(default_factory=list)
    skipped: str = ""  # why the row did not run (a peer that could not be had)
    # Scenario d: requests that reached the upstream during the run, per second of it and per
    # client request, and the filter's counters over the run: requests its route answered, its
    # call's attempts and those coalesced (-1 when not read).
    hits: int = 0
    hits_per_s: float = 0.0
    hits_per_req: float = 0.0
    answered: int = -1
    attempts: int = -1
    coalesced: int = -1

    @property
    def coalesced_share(self) -> float | None:
        """Of the answers the filter gave, those from another aggregation's request."""
        return self.coalesced / self.answered if self.coalesced >= 0 and self.answered > 0 else None

    @property
    def gw_us_per_req(self) -> float:
        return self.gw_cpu * 1e6 / self.rps if self.rps else 0.0

    @property
    def other_cpu(self) -> float:
        """CPU used by everything else on the machine (other work, this script), in cores."""
        return max(0.0, self.busy - self.gw_cpu - self.up_cpu - self.wrk_cpu)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unknown duration {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> Result:
    result = Result()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise ValueError("no Requests/sec in wrk's output")
    result.rps = float(m.group(1))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency in wrk's output (was --latency given?)")
        setattr(result, attr, parse_ms(m.group(1)))
    m = re.search(r"(\d+) requests in", out)
    result.requests = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result.non_2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result.socket_errors = sum(map(int, m.groups())) if m else 0
    return result


def wrk_argv(wrk: str, connections: int, seconds: int, url: str) -> list[str]:
    return [wrk, f"-t{min(WRK_THREADS, connections)}", f"-c{connections}", f"-d{seconds}s",
            "--latency", url]


def run_wrk(procs: Processes, argv: list[str], timeout_s: float) -> str:
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        out, _ = popen.communicate(timeout=timeout_s)
    except BaseException:
        stop(popen, grace_s=1.0)
        raise
    if popen.returncode != 0:
        die(f"wrk failed (status {popen.returncode}): {' '.join(argv)}\n{out}")
    return out


def measure(procs: Processes, wrk: str, row: Row, connections: int, pids: dict[str, int]) -> Result:
    url = f"http://{HOST}:{row.port}{row.path}"
    if WARMUP > 0:
        run_wrk(procs, wrk_argv(wrk, connections, WARMUP, url), WARMUP + 30)
    procs.check_alive()
    if row.stats_route:
        time.sleep(FILTER_STATS_FLUSH_S)  # the warm-up's counts flushed before the run's start
    route0 = filter_route_stats(FILTER_ADMIN, row.stats_route) if row.stats_route else {}
    hits0 = upstream_hits(row.hits_on) if row.hits_on else 0
    gw_pids, up_pid = {name: pids[name] for name in row.cpu}, pids["upstreams"]
    gw0 = {name: tree_cpu_seconds(pid) for name, pid in gw_pids.items()}
    up0 = cpu_seconds(up_pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = machine_busy_seconds()
    t0 = time.monotonic()
    out = run_wrk(procs, wrk_argv(wrk, connections, DURATION, url), DURATION + 30)
    wall = time.monotonic() - t0
    busy1 = machine_busy_seconds()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_wrk(out)
    result.parts = {name: (tree_cpu_seconds(pid) - gw0[name]) / wall for name, pid in gw_pids.items()}
    result.gw_cpu = sum(result.parts.values())
    result.up_cpu = (cpu_seconds(up_pid) - up0) / wall
    result.busy = (busy1 - busy0) / wall
    result.wrk_cpu = ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall
    if row.hits_on:
        # The window of the counter holds the run's wall time and two reads of the admin; no
        # other request reaches the upstream meanwhile (rows run one at a time).
        result.hits = upstream_hits(row.hits_on) - hits0
        result.hits_per_s = result.hits / wall
        result.hits_per_req = result.hits / result.requests if result.requests else 0.0
    if row.stats_route:
        time.sleep(FILTER_STATS_FLUSH_S)  # the run's counts flushed
        route1 = filter_route_stats(FILTER_ADMIN, row.stats_route)
        delta = {name: route1.get(name, 0) - route0.get(name, 0)
                 for name in ("requests", "call.a.attempts", "call.a.coalesced")}
        result.answered = delta["requests"]
        result.attempts = delta["call.a.attempts"]
        result.coalesced = delta["call.a.coalesced"]
    if result.non_2xx:
        result.problems.append(f"{result.non_2xx} non-2xx responses")
    if result.socket_errors:
        result.problems.append(f"{result.socket_errors} socket errors")
    if result.requests == 0:
        result.problems.append("no request completed")
    procs.check_alive()
    return result


def median_result(results: list[Result], by: str) -> Result:
    """The run with the median `by` (rps, p50_ms), whole, so its columns stay consistent with
    each other (CPU per request is that run's CPU over that run's requests); the error counts
    of every run."""
    if len(results) == 1:
        return results[0]
    ordered = sorted(results, key=lambda r: getattr(r, by))
    median = ordered[(len(ordered) - 1) // 2]
    return Result(
        rps=median.rps, p50_ms=median.p50_ms, p99_ms=median.p99_ms,
        requests=sum(r.requests for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        gw_cpu=median.gw_cpu, up_cpu=median.up_cpu, wrk_cpu=median.wrk_cpu, busy=median.busy,
        parts=median.parts, problems=[p for r in results for p in r.problems],
        hits=median.hits, hits_per_s=median.hits_per_s, hits_per_req=median.hits_per_req,
        answered=median.answered, attempts=median.attempts, coalesced=median.coalesced,
    )


# ---------------------------------------------------------------------------- scenarios

SCENARIO_TITLES = {
    "a": "Scenario a: throughput at saturation (upstreams at 0 ms)",
    "b": "Scenario b: latency at moderate load (upstreams a..d at 20/40/60/80 ms)",
    "c": "Scenario c: one of four calls times out (d takes 1000 ms, its timeout is 200 ms)",
    "d": "Scenario d: a hot path, with and without coalesce (one call to upstream a at 20 ms)",
}


def scenario_rows(scenario: str) -> list[Row]:
    """The rows of a scenario, in the order they run in every round; only those named in ROWS
    when it is set (a focused A/B of a few rows with many rounds)."""
    rows = all_scenario_rows(scenario)
    return [row for row in rows if not ROWS or row.key in ROWS]


def all_scenario_rows(scenario: str) -> list[Row]:
    if scenario == "a":
        return [
            Row("fanout", "filter, fan-out x4", FILTER_PORT, "/agg", "aggregate", ("filter",)),
            Row("floor", "floor: bare dispatch-only filter, x4", FLOOR_PORT, "/agg", "aggregate",
                ("floor",), kind="floor"),
            Row("plain", "plain Envoy proxy, 1 call", PLAIN_PORT, "/plain/0ms", "single", ("plain",)),
            Row("pass", "filter installed, pass-through", FILTER_PORT, "/plain/0ms", "single",
                ("filter",)),
            Row("lua", "Envoy Lua, 4 sequential calls", LUA_PORT, "/agg", "aggregate", ("lua",)),
            Row("node_hop", "Envoy -> Node.js BFF", HOP_NODE_PORT, "/agg", "aggregate",
                ("hop", "node"), kind="deployment"),
            Row("rust_hop", "Envoy -> Rust BFF", HOP_RUST_PORT, "/agg", "aggregate",
                ("hop", "rust-bff"), kind="deployment"),
            Row("node", "Node.js BFF alone", NODE_PORT, "/agg", "aggregate", ("node",),
                kind="information"),
            Row("rust", "Rust BFF alone (hyper, 1 thread)", RUST_BFF_PORT, "/agg", "aggregate",
                ("rust-bff",), kind="information"),
            Row("nginx", "nginx + njs subrequests", NGINX_PORT, "/agg", "aggregate", ("nginx",),
                kind="information"),
            Row("fanout_h2", "filter, fan-out x4, HTTP/2 upstreams", FILTER_H2_PORT, "/agg",
                "aggregate", ("filter-h2",), kind="information"),
            Row("plain_h2", "plain Envoy proxy, HTTP/2 upstream", PLAIN_H2_PORT, "/plain/0ms",
                "single", ("plain-h2",), kind="information"),
            Row("direct", "upstream a directly (reference)", UPSTREAM_PORTS["a"], "/0ms", "single",
                (), reference=True),
        ]
    if scenario == "b":
        return [
            Row("fanout", "filter, fan-out x4", FILTER_PORT, "/agg/delay", "aggregate", ("filter",), 80),
            Row("plain_d", "plain Envoy proxy to d (the slowest)", PLAIN_PORT, "/d/delay",
                "single-d", ("plain",), 80),
            Row("floor", "floor: bare dispatch-only filter, x4", FLOOR_DELAY_PORT, "/agg/delay",
                "aggregate", ("floor",), 80, kind="floor"),
            Row("lua", "Envoy Lua, 4 sequential calls", LUA_PORT, "/agg/delay", "aggregate",
                ("lua",), 80),
            Row("node_hop", "Envoy -> Node.js BFF", HOP_NODE_PORT, "/agg/delay", "aggregate",
                ("hop", "node"), 80, kind="deployment"),
            Row("node", "Node.js BFF alone", NODE_PORT, "/agg/delay", "aggregate", ("node",), 80,
                kind="information"),
            Row("plain", "plain Envoy proxy, 1 call (a)", PLAIN_PORT, "/plain/delay", "single",
                ("plain",), 20),
            Row("pass", "filter installed, pass-through (a)", FILTER_PORT, "/plain/delay", "single",
                ("filter",), 20),
            Row("direct", "upstream d directly (reference)", UPSTREAM_PORTS["d"], "/delay", "single-d",
                (), 80, reference=True),
        ]
    if scenario == "c":
        return [
            Row("fanout", "filter, fan-out x4", FILTER_PORT, "/agg/timeout", "timeout", ("filter",),
                CALL_TIMEOUT_MS),
            Row("node", "Node.js BFF alone", NODE_PORT, "/agg/timeout", "timeout", ("node",),
                CALL_TIMEOUT_MS, kind="peer"),
            Row("lua", "Envoy Lua, 4 sequential calls", LUA_PORT, "/agg/timeout", "timeout", ("lua",),
                CALL_TIMEOUT_MS),
        ]
    if scenario == "d":
        # Every client asks for the same path at once; each route has one GET call to a's
        # /delay (20 ms), the second with "coalesce": true (benches/envoy/gateway-filter.yaml).
        return [
            Row("hot", "filter, 1 call to a", FILTER_PORT, "/hot", "hot", ("filter",), HOT_MS,
                hits_on="a", stats_route="hot"),
            Row("hot_coalesce", "filter, 1 call to a, coalesce", FILTER_PORT, "/hot/coalesce",
                "hot", ("filter",), HOT_MS, hits_on="a", coalesce=True,
                stats_route="hot-coalesce"),
            # What the machine makes of 64 clients on an upstream at 20 ms without the filter.
            Row("plain", "plain Envoy proxy to a (reference)", PLAIN_PORT, "/plain/delay",
                "single", ("plain",), HOT_MS, hits_on="a"),
        ]
    die(f"unknown scenario {scenario!r} in SCENARIOS (use a, b, c, d)", 2)


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def cpu_parts(r: Result, scenario: str) -> str:
    """'Envoy hop 31% + Node 64%', or in µs per request in scenarios a and d."""
    if scenario in ("a", "d") and r.rps:
        return " + ".join(f"{PROCESS_LABELS.get(n, n)} {c * 1e6 / r.rps:.0f}" for n, c in r.parts.items())
    return " + ".join(f"{PROCESS_LABELS.get(n, n)} {pct(c)}" for n, c in r.parts.items())


def console_line(row: Row, r: Result, scenario: str) -> str:
    if r.skipped:
        return f"  {row.label:<37} {r.skipped}"
    text = (f"  {row.label:<37} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:>8.2f} ms  "
            f"p99 {r.p99_ms:>8.2f} ms")
    if scenario in ("b", "c"):
        text += f"  (+{r.p50_ms - row.floor_ms:.2f} / +{r.p99_ms - row.floor_ms:.2f} ms over {row.floor_ms:g})"
    if row.hits_on:
        text += (f"  upstream {row.hits_on}: {r.hits_per_s:,.0f} hits/s, "
                 f"{r.hits_per_req:.3f} per request")
        if r.coalesced_share is not None:
            text += (f", {r.coalesced_share:.1%} coalesced (filter: {r.answered:,} answered, "
                     f"{r.attempts - r.coalesced:,} sent)")
    if row.cpu:
        text += f"  cpu: path {pct(r.gw_cpu)}" + (f" ({r.gw_us_per_req:.0f} µs/req)" if scenario in ("a", "d") else "")
        if len(row.cpu) > 1:
            text += f" [{cpu_parts(r, scenario)}]"
    else:
        text += "  cpu:"
    text += f" up {pct(r.up_cpu)} wrk {pct(r.wrk_cpu)} other {pct(r.other_cpu)}"
    if r.problems:
        text += "  FAIL: " + "; ".join(r.problems)
    return text


@dataclass
class ScenarioResults:
    median: dict[str, Result]  # per row: its median run (by req/s in a and d, by p50 in b and c)
    runs: dict[str, list[Result]]  # per row: every round's run, in round order


def run_scenario(procs: Processes, wrk: str, scenario: str, pids: dict[str, int],
                 skips: dict[str, str]) -> ScenarioResults:
    rows = scenario_rows(scenario)
    connections = CONNECTIONS[scenario]
    say(f"\n{SCENARIO_TITLES[scenario]}: wrk -t{min(WRK_THREADS, connections)} -c{connections} "
        f"-d{DURATION:g}s --latency" + (f", {ROUNDS} rounds (median run)" if ROUNDS > 1 else ""))
    failures: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for row in rows:
        missing = [name for name in row.cpu if name not in pids]
        if missing:
            skipped[row.key] = "; ".join(skips.get(name, f"{name}: not started") for name in missing)
            say(f"  {row.label:<37} {skipped[row.key]}")
            continue
        problem = check_json(row.port, row.path, row.expect)
        if not problem and row.stats_route:
            problem = check_hot_at_once(row)
        if problem:
            failures[row.key] = [f"wrong answer before the run: {problem}"]
            say(f"  {row.label:<37} FAIL: {problem}")
    runs: dict[str, list[Result]] = {row.key: [] for row in rows}
    for round_no in range(ROUNDS):
        if ROUNDS > 1:
            say(f" round {round_no + 1}/{ROUNDS}")
        for row in rows:
            if row.key in failures or row.key in skipped:
                continue
            r = measure(procs, wrk, row, connections, pids)
            runs[row.key].append(r)
            say(console_line(row, r, scenario))
    results = {}
    for row in rows:
        if row.key in skipped:
            results[row.key] = Result(skipped=skipped[row.key])
        elif row.key in failures:
            results[row.key] = Result(problems=failures[row.key])
        else:
            results[row.key] = median_result(runs[row.key], "rps" if scenario in ("a", "d") else "p50_ms")
    if ROUNDS > 1:
        say(" median:")
        for row in rows:
            say(console_line(row, results[row.key], scenario))
    return ScenarioResults(results, runs)


# ---------------------------------------------------------------------------- ratios

@dataclass
class Ratio:
    name: str
    formula: str
    value: float | None  # the median over the interleaved rounds
    target: str  # "" for a ratio reported for information
    ok: bool | None
    extra: str = ""
    unit: str = ""  # "", "ms" or "KB"
    rounds: list[float] = field(default_factory=list)

    def verdict(self) -> str:
        if not self.target:
            return "info"
        if self.ok is None:
            return "n/a"
        return "PASS" if self.ok else "MISS"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def per_round(all_results: dict[str, ScenarioResults], scenario: str, keys: tuple[str, ...],
              fn) -> list[float]:
    """fn(run of keys[0], run of keys[1], ...) for every round in which all of them ran clean."""
    sr = all_results.get(scenario)
    if not sr:
        return []
    lists = [sr.runs.get(k, []) for k in keys]
    out = []
    for i in range(min(len(runs) for runs in lists)):
        rs = [runs[i] for runs in lists]
        if any(r.problems or not r.rps for r in rs):
            continue
        value = fn(*rs)
        if value is not None:
            out.append(value)
    return out


def us(r: Result) -> float | None:
    """CPU µs per request over the request path; None when no CPU was counted."""
    return r.gw_us_per_req if r.gw_cpu else None


def cpu_ratio(n: Result, d: Result) -> float | None:
    a, b = us(n), us(d)
    return a / b if a and b else None


def ratios(all_results: dict[str, ScenarioResults], wasm_bytes: int) -> list[Ratio]:
    def get(scenario: str, key: str) -> Result | None:
        r = all_results[scenario].median.get(key) if scenario in all_results else None
        return r if r and not r.problems and not r.skipped and r.rps > 0 else None

    def ratio(name: str, formula: str, scenario: str, keys: tuple[str, ...], fn, target: str = "",
              check=None, extra: str = "", unit: str = "") -> Ratio:
        rounds = per_round(all_results, scenario, keys, fn)
        value = median(rounds)
        ok = check(value) if (check and value is not None) else None
        return Ratio(name, formula, value, target, ok, extra, unit, rounds)

    def also(scenario: str, keys: tuple[str, ...], fn, text: str) -> str:
        value = median(per_round(all_results, scenario, keys, fn))
        return text.format(value) if value is not None else ""

    def parts_us(key: str) -> str:
        r = get("a", key)
        return cpu_parts(r, "a") + " µs" if r else ""

    exchange = lambda n, d: n.rps * 5 / (d.rps * 2)  # noqa: E731
    exchange_cpu = lambda n, d: d.gw_us_per_req * 5 / (n.gw_us_per_req * 2) if n.gw_cpu and d.gw_cpu else None  # noqa: E731
    out = [
        ratio("ours / floor, CPU", "filter x4 CPU µs / floor x4 CPU µs (scenario a)", "a",
              ("fanout", "floor"), cpu_ratio, f"<= {TARGET_VS_FLOOR:.2f}",
              lambda v: v <= TARGET_VS_FLOOR,
              also("a", ("floor", "fanout"), lambda f, o: f.rps / o.rps,
                   "by req/s: floor / ours {:.2f}")),
        ratio("ours / Envoy Lua, CPU", "filter x4 CPU µs / Lua x4 CPU µs (scenario a)", "a",
              ("fanout", "lua"), cpu_ratio, f"<= {TARGET_VS_LUA:.2f}", lambda v: v <= TARGET_VS_LUA,
              also("b", ("lua", "fanout"), lambda lua, o: lua.p50_ms - o.p50_ms,
                   "Lua answers {:+.1f} ms later at p50 (scenario b: the sum of its calls)")),
        ratio("exchange efficiency", "(filter x4 req/s x 5) / (plain req/s x 2)", "a",
              ("fanout", "plain"), exchange, f">= {TARGET_EXCHANGE:.2f}",
              lambda v: v >= TARGET_EXCHANGE,
              "; ".join(filter(None, [
                  also("a", ("fanout", "plain"), exchange_cpu, "per CPU-second: {:.2f}"),
                  also("a", ("floor", "plain"), exchange, "the floor's: {:.2f}")]))),
        ratio("Envoy -> Node.js BFF / ours, CPU",
              "(Envoy hop + Node) CPU µs / filter x4 CPU µs (scenario a)", "a",
              ("node_hop", "fanout"), cpu_ratio, f">= {TARGET_NODE_HOP:.1f}",
              lambda v: v >= TARGET_NODE_HOP, parts_us("node_hop")),
        ratio("pass-through / plain", "pass-through req/s / plain req/s", "a", ("pass", "plain"),
              lambda n, d: n.rps / d.rps, f">= {TARGET_PASSTHROUGH:.2f}",
              lambda v: v >= TARGET_PASSTHROUGH,
              also("a", ("pass", "plain"), lambda n, d: cpu_ratio(d, n), "per CPU-second: {:.2f}")),
        ratio("added p50 latency", "filter x4 p50 - plain Envoy to d p50 (scenario b)", "b",
              ("fanout", "plain_d"), lambda o, d: o.p50_ms - d.p50_ms,
              f"<= {TARGET_ADDED_P50_MS} ms", lambda v: v <= TARGET_ADDED_P50_MS,
              "; ".join(filter(None, [
                  also("b", ("fanout", "direct"), lambda o, d: o.p50_ms - d.p50_ms,
                       "over d measured directly: {:+.2f} ms"),
                  also("b", ("floor", "plain_d"), lambda f, d: f.p50_ms - d.p50_ms,
                       "the floor's: {:+.2f} ms")])), unit="ms"),
        # For information: the peers, HTTP/2, p99, size.
        ratio("Envoy -> Rust BFF / ours, CPU",
              "(Envoy hop + Rust BFF) CPU µs / filter x4 CPU µs (scenario a)", "a",
              ("rust_hop", "fanout"), cpu_ratio, extra=parts_us("rust_hop")),
        ratio("Rust BFF alone / ours, CPU", "Rust BFF CPU µs / filter x4 CPU µs (scenario a)", "a",
              ("rust", "fanout"), cpu_ratio),
        ratio("nginx + njs / ours, CPU", "nginx (master + worker) CPU µs / filter x4 CPU µs "
              "(scenario a)", "a", ("nginx", "fanout"), cpu_ratio,
              extra=(all_results["a"].median["nginx"].skipped
                     if "a" in all_results and "nginx" in all_results["a"].median else "")),
        ratio("Node.js BFF alone / ours, CPU", "Node CPU µs / filter x4 CPU µs (scenario a)", "a",
              ("node", "fanout"), cpu_ratio,
              extra=also("a", ("fanout", "node"), lambda o, n: o.rps / n.rps,
                         "ours / Node by req/s (one core each): {:.2f}")),
        ratio("exchange efficiency, HTTP/2 upstreams",
              "(filter x4 h2 req/s x 5) / (plain h2 req/s x 2)", "a", ("fanout_h2", "plain_h2"),
              exchange, extra=also("a", ("fanout_h2", "plain_h2"), exchange_cpu,
                                   "per CPU-second: {:.2f}")),
        ratio("added p99 latency", "filter x4 p99 - plain Envoy to d p99 (scenario b)", "b",
              ("fanout", "plain_d"), lambda o, d: o.p99_ms - d.p99_ms, unit="ms",
              extra=also("b", ("fanout", "direct"), lambda o, d: o.p99_ms - d.p99_ms,
                         "over d measured directly: {:+.2f} ms")),
        ratio("coalesce: upstream hits/s, without / with",
              "hot path upstream a hits/s without / with coalesce (scenario d)", "d",
              ("hot", "hot_coalesce"),
              lambda n, c: n.hits_per_s / c.hits_per_s if c.hits_per_s else None,
              extra="; ".join(filter(None, [
                  also("d", ("hot_coalesce", "hot"), lambda c, n: c.rps / n.rps,
                       "client req/s with / without: {:.2f}"),
                  also("d", ("hot_coalesce", "hot"), lambda c, n: c.p50_ms - n.p50_ms,
                       "p50 with - without: {:+.2f} ms"),
                  also("d", ("hot_coalesce", "hot"), cpu_ratio,
                       "CPU per request with / without: {:.2f}")]))),
    ]
    out.append(Ratio(".wasm size", str(WASM.relative_to(ROOT)), wasm_bytes / 1000, "", None,
                     f"{wasm_bytes:,} bytes (issue 7's limit: {WASM_BYTES_ISSUE_7 // 1000} KB)",
                     unit="KB"))
    return out


def ratio_value(r: Ratio) -> str:
    if r.value is None:
        return "n/a"
    if r.unit == "ms":
        return f"{r.value:+.2f} ms"
    if r.unit == "KB":
        return f"{r.value:,.1f} KB"
    text = f"{r.value:.2f}"
    # A value that rounds to its target (0.617 against >= 0.62) shows a third decimal, so that
    # the figure does not seem to contradict its verdict.
    bound = re.search(r"[\d.]+$", r.target)
    if bound and float(text) == float(bound.group()):
        text = f"{r.value:.3f}"
    return text


def ratio_rounds(r: Ratio) -> str:
    if len(r.rounds) < 2:
        return ""
    return ", ".join(f"{v:+.2f}" if r.unit == "ms" else f"{v:.2f}" for v in r.rounds)


# ---------------------------------------------------------------------------- core bench

def run_core() -> list[tuple[str, str]]:
    say("\nCriterion micro-benchmark: cargo bench --bench core")
    out = subprocess.run(["cargo", "bench", "--bench", "core"], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        say(out.stdout[-2000:] + out.stderr[-2000:])
        die("cargo bench --bench core failed")
    rows, name = [], ""
    for line in out.stdout.splitlines():
        m = re.match(r"^(\S+)?\s+time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]", line)
        if m:
            rows.append((m.group(1) or name, m.group(3)))
            say(f"  {rows[-1][0]:<24} {rows[-1][1]}")
        elif line and not line.startswith((" ", "Benchmarking", "Found")):
            name = line.split()[0]
    return rows


# ---------------------------------------------------------------------------- report

NOTES_PLACEHOLDER = """_Findings go here; this section is kept when `make bench` rewrites the file._
"""


def existing_notes(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError:
        return NOTES_PLACEHOLDER
    m = re.search(r"^## Notes[^\n]*\n(.*)\Z", text, re.M | re.S)
    return m.group(1).strip("\n") + "\n" if m else NOTES_PLACEHOLDER


def command_line() -> str:
    parts = []
    for name in ("QUICK", "DURATION", "WARMUP", "ROUNDS", "SCENARIOS", "ROWS", "CONNECTIONS_A",
                 "CONNECTIONS_B", "CONNECTIONS_C", "CONNECTIONS_D", "WRK_THREADS", "CORE"):
        if os.environ.get(name):
            parts.append(f"{name}={shlex.quote(os.environ[name])}")
    parts += ["make", "bench"]
    return " ".join(parts)


KIND_LABELS = {"gateway": "Envoy", "floor": "floor", "deployment": "deployment",
               "information": "information", "peer": "peer"}


def kind_label(row: Row) -> str:
    if row.reference:
        return "reference"
    if row.key in ("fanout", "pass"):
        return "**ours**"
    return KIND_LABELS.get(row.kind, row.kind)


def get_ratio(rats: list[Ratio], name: str) -> Ratio | None:
    return next((r for r in rats if r.name == name), None)


def standing(all_results: dict[str, ScenarioResults], rats: list[Ratio]) -> list[str]:
    """Where we lose and where we win, in this run's numbers."""
    a = all_results["a"].median if "a" in all_results else {}
    b = all_results["b"].median if "b" in all_results else {}
    d = all_results["d"].median if "d" in all_results else {}

    def ok(res: dict[str, Result], key: str) -> Result | None:
        r = res.get(key)
        return r if r and r.rps and not r.problems and not r.skipped else None

    def cpu(key: str) -> str:
        r = ok(a, key)
        return f"{r.gw_us_per_req:.0f} µs" if r and r.gw_cpu else "n/a"

    def ratio(name: str) -> str:
        r = get_ratio(rats, name)
        return ratio_value(r) if r else "n/a"

    def us_of(key: str) -> float | None:
        r = ok(a, key)
        return r.gw_us_per_req if r and r.gw_cpu else None

    lose, win = [], []
    if a:
        nginx = cpu("nginx") if ok(a, "nginx") else (a["nginx"].skipped if "nginx" in a else "n/a")
        text = (f"- **CPU against compiled peers.** Per 4-call aggregation (scenario a) ours "
                f"costs {cpu('fanout')}; a Rust hyper/tokio BFF behind an Envoy hop "
                f"{cpu('rust_hop')} ({ratio('Envoy -> Rust BFF / ours, CPU')}× ours), the same "
                f"BFF alone {cpu('rust')} ({ratio('Rust BFF alone / ours, CPU')}×), nginx + njs "
                f"subrequests {nginx} ({ratio('nginx + njs / ours, CPU')}×). Most of ours is "
                f"Envoy's own cost per `dispatch_http_call`: the floor, a filter that only "
                f"dispatches and concatenates, costs {cpu('floor')}, and ours "
                f"{ratio('ours / floor, CPU')}× that.")
        floor, rust_hop = us_of("floor"), us_of("rust_hop")
        if floor and rust_hop and floor > rust_hop:
            text += (" Even the floor costs more than the Rust BFF with its Envoy hop: where CPU "
                     "per aggregation is all that matters, a compiled BFF is cheaper than any "
                     "filter built on Envoy's async HTTP client.")
        lose.append(text)
        lua = get_ratio(rats, "ours / Envoy Lua, CPU")
        if lua and lua.value is not None:
            line = (f"ours / Lua {ratio_value(lua)} (Lua {cpu('lua')} per aggregation, its calls "
                    "one after the other)")
            (lose if lua.value > 1 else win).append(
                f"- **CPU against Envoy Lua**: {line}." if lua.value > 1
                else f"- **CPU against Envoy Lua, with parallel calls**: {line}.")
        win.append(
            f"- **No extra hop, no extra service.** A BFF needs a route in front of it: Node "
            f"behind Envoy costs {cpu('node_hop')} per aggregation "
            f"({ratio('Envoy -> Node.js BFF / ours, CPU')}× ours), and a second process to "
            "deploy, scale and watch.")
    if b:
        fan, lua_b, plain_d = ok(b, "fanout"), ok(b, "lua"), ok(b, "plain_d")
        if fan and lua_b and plain_d:
            win.append(
                f"- **Latency = the slowest call.** With calls at 20/40/60/80 ms (scenario b) "
                f"ours answers at p50 {fan.p50_ms:.1f} ms, plain Envoy to the slowest call alone "
                f"at {plain_d.p50_ms:.1f} ms (added p50 {ratio('added p50 latency')}); Envoy Lua "
                f"at {lua_b.p50_ms:.1f} ms, the sum of its calls.")
    if d:
        hot, co = ok(d, "hot"), ok(d, "hot_coalesce")
        if hot and co:
            win.append(
                f"- **Hot paths, coalesced.** {CONNECTIONS['d']} clients on one path whose call "
                f"takes 20 ms (scenario d): with `\"coalesce\": true` the upstream gets "
                f"{co.hits_per_s:,.0f} requests/s instead of {hot.hits_per_s:,.0f} "
                f"({co.hits_per_req:.3f} per client request), from configuration; the peers "
                "here have no such thing.")
    win.append(
        "- **Features, from configuration**, which a BFF has to be written and maintained for: "
        "per-call timeouts and a route deadline, required/optional calls and fallbacks, "
        "dependent calls, JSON checked and numbers kept exactly, honest status codes, "
        "`x-aggregation-complete`/`_meta`/`server-timing`, stats, trace headers forwarded "
        "(README.md). The peers here do only what this benchmark needs: the floor, the Rust "
        "BFF and the njs script concatenate the bodies, the Node BFF parses and re-serialises "
        "them, with per-call timeouts.")
    return ["**Where we lose.**\n", *lose, "", "**Where we win.**\n", *win, ""]


def hot_path_notes(all_results: dict[str, ScenarioResults]) -> list[str]:
    """Scenario d: what its rows are, how hits are counted, and the result in one sentence."""
    w = [f"The filter's rows: `-c{CONNECTIONS['d']}` on one path of the filter's gateway "
         "(`benches/envoy/gateway-filter.yaml`, one worker), routes `hot` and `hot-coalesce`, "
         "each with one GET call to upstream a's `/delay` (20 ms), identical but for "
         "`\"coalesce\": true` on the second's call; for reference, plain Envoy "
         "(`benches/envoy/gateway-plain.yaml`, no filter) proxying the same clients to a's "
         "`/delay`: the latency the machine gives 64 clients on that upstream without the "
         "filter. *upstream hits/s*: requests that reached "
         "upstream a during the run (its `http.a.downstream_rq_total` from the upstream Envoy's "
         "admin `/stats`, read before and after, no other traffic meanwhile) over the run's wall "
         "time; *hits per request*: those hits over the client requests wrk completed (1 without "
         "coalescing, plus the requests still in flight when wrk stops, at most one per "
         "connection, which reached a but never completed); *answers coalesced*: the filter's "
         "`route.<route>.call.a.coalesced` over the route's `requests`, both over the run (read "
         "after the filter's once-a-second flush of its counters): the share of answers marked "
         "`_meta.coalesced`. Before the run, "
         f"{HOT_CHECK_CLIENTS} clients at once must all be answered right, reach upstream a "
         f"{HOT_CHECK_CLIENTS} times and carry no `_meta.coalesced` without coalescing; with it, "
         "fewer times, with the shared answers marked `_meta.coalesced: [\"a\"]`. With "
         "coalescing the clients move in waves: one upstream request per wave, its answer "
         "handed to every waiter in one callback on the gateway's one worker, so hits/s is about "
         "one over the wave's round trip, and the wave's answers wait for each other's CPU.\n"]
    d = all_results["d"].median
    hot, co = d.get("hot"), d.get("hot_coalesce")
    if all(r and r.rps and not r.problems and not r.skipped for r in (hot, co)):
        w.append(f"With `coalesce`, upstream a saw {hot.hits_per_s:,.0f} → "
                 f"{co.hits_per_s:,.0f} requests/s"
                 + (f" ({hot.hits_per_s / co.hits_per_s:,.0f}× fewer)" if co.hits_per_s else "")
                 + f", {co.hits_per_req:.3f} per client request instead of "
                 f"{hot.hits_per_req:.3f}, while clients got {hot.rps:,.0f} → {co.rps:,.0f} "
                 f"req/s at p50 {hot.p50_ms:.1f} → {co.p50_ms:.1f} ms, for "
                 f"{hot.gw_us_per_req:.0f} → {co.gw_us_per_req:.0f} µs of gateway CPU per "
                 "request.\n")
    return w


def report(info: dict[str, str], all_results: dict[str, ScenarioResults], rats: list[Ratio],
           wasm_bytes: int, wrk: str, core: list[tuple[str, str]]) -> str:
    w = []
    w.append("# Benchmarks\n")
    w.append("Generated by `make bench` (`benches/run.py`); the **Notes** section at the end is "
             "kept when the file is regenerated.\n")
    if QUICK or DURATION < 10:
        w.append(f"> **Short run ({DURATION:g} s per measurement)**: a smoke test of the harness, "
                 "not numbers to quote.\n")
    w.append("## Machine\n")
    w.append("| | |\n| --- | --- |")
    for key, label in (("nproc", "nproc"), ("cpu", "CPU"), ("kernel", "kernel"), ("envoy", "Envoy"),
                       ("node", "Node.js"), ("nginx", "nginx"), ("rustc", "Rust (peers)"),
                       ("wrk", "wrk"), ("python", "Python"), ("commit", "commit"),
                       ("loadavg", "load average at start (1/5/15 min)"), ("date", "date")):
        w.append(f"| {label} | {info[key]} |")
    w.append(f"| `.wasm` | {wasm_bytes:,} bytes |\n")
    w.append("## Command\n")
    w.append("Every figure in this file comes from this one run:\n")
    w.append(f"```sh\n{command_line()}\n```\n")
    w.append(f"Each row: a {WARMUP:g} s warm-up, then "
             f"`{Path(wrk).name} -t{WRK_THREADS} -c<N> -d{DURATION:g}s --latency <url>`"
             + (f", {ROUNDS} interleaved rounds (every row once per round, in the order shown); "
                "each row shows its median run (by req/s in scenarios a and d, by p50 in b and c), the "
                "ratios are the median of the per-round ratios" if ROUNDS > 1 else "")
             + ". Upstreams: one Envoy (`benches/envoy/upstreams.yaml`, `--concurrency 2`) with "
             "four listeners a..d serving ~300-byte JSON bodies (`direct_response`), delays from "
             "the HTTP fault filter. Every Envoy in the request path has one worker "
             "(`--concurrency 1`), the Node.js BFF is one process, the Rust BFF one thread, nginx "
             "one worker. Nothing is pinned to a CPU.\n")
    w.append("Rows: **filter, fan-out x4** (ours): `benches/envoy/gateway-filter.yaml`, one filter "
             "route, 4 calls to a..d, nested layout; **filter installed, pass-through** (ours): the "
             "filter's Envoy, `/plain/*` matches no filter route and is proxied to cluster a "
             "through the filter chain (the filter is enabled on every route, the worst case); "
             "**floor**: `benches/floor/` (source) and `benches/floor/gateway-floor.yaml`, a bare "
             "proxy-wasm filter built from source that dispatches the 4 calls, reads each "
             "`:status` and body, and answers once with the bodies side by side, its unused "
             "exports stripped like ours: what `dispatch_http_call` itself costs, the reference "
             "our own cost is measured against; **plain Envoy proxy**: "
             "`benches/envoy/gateway-plain.yaml`, no filter, `/plain/*` to cluster a, `/d/*` to "
             "cluster d (the slowest upstream in scenario b); **Envoy Lua**: "
             "`benches/envoy/gateway-lua.yaml`, `httpCall` four times (sequential), string "
             "concatenation; **deployment** rows, what a team running Envoy deploys when the "
             "aggregation is a service: client → Envoy (`benches/envoy/gateway-hop.yaml`, a plain "
             "route) → BFF → upstreams, CPU summed over the Envoy hop and the BFF: **Envoy -> "
             "Node.js BFF** (`benches/node/bff.js`: `http` + keep-alive `Agent`, `Promise.all`, "
             "`JSON.parse`/`JSON.stringify`) and **Envoy -> Rust BFF** (`benches/bff-rust/`: "
             "hyper 1 + tokio, a current-thread runtime, `tokio::join!` of the 4 calls over a "
             "keep-alive pool, bodies concatenated, not parsed); **information** rows: the two "
             "BFFs alone (no hop), **nginx + njs** (`benches/nginx/`: Debian's nginx and "
             "libnginx-mod-http-js, `Promise.all` of 4 `r.subrequest`s to keep-alive upstreams, "
             "bodies concatenated), and the filter and the plain proxy with every cluster "
             "speaking HTTP/2 to the upstreams (`explicit_http_config: {http2_protocol_options: "
             "{}}`, derived at run time by `http2_variant` in `benches/run.py`).\n")
    w.append("Columns: *CPU* is the CPU time of the processes in the request path (the gateway; "
             "for a deployment row the Envoy hop plus the BFF; nginx's master plus its worker) "
             "over the run's wall time (100% = one core), read from `/proc/<pid>/stat`; *CPU "
             "µs/req* that time per request, *of which* split by process; *upstream CPU* and "
             "*wrk CPU* the same for the upstream Envoy and the load generator; *other CPU* "
             f"whatever else kept the machine's {os.cpu_count()} cores busy meanwhile (other work "
             "on the machine, this script). A request path below 100% per process at saturation "
             "was short of CPU, not of work.\n")

    for scenario in ("a", "b", "c", "d"):
        if scenario not in all_results:
            continue
        results = all_results[scenario].median
        rows = scenario_rows(scenario)
        w.append(f"## {SCENARIO_TITLES[scenario]}\n")
        w.append(f"`-c{CONNECTIONS[scenario]}`.\n")
        if scenario == "a":
            w.append("| Row | Kind | Path | req/s | p50 | p99 | non-2xx | CPU | CPU µs/req | of which (µs/req) | upstream CPU | wrk CPU | other CPU |")
            w.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
        elif scenario == "b":
            w.append("| Row | Kind | Path | floor | req/s | p50 | p99 | added p50 | added p99 | p50 - plain Envoy to d | non-2xx | CPU |")
            w.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        elif scenario == "d":
            w.append("| Row | Path | coalesce | req/s | p50 | p99 | upstream hits/s | hits per request | answers coalesced | non-2xx | CPU | CPU µs/req |")
            w.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        else:
            w.append("| Row | Kind | Path | call timeout | req/s | p50 | p99 | p50 - timeout | p99 - timeout | non-2xx |")
            w.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            r = results.get(row.key)
            if r is None:
                continue
            label = f"_{row.label}_" if row.reference else row.label
            head = f"| {label} | {kind_label(row)} | `{row.path}` |"
            if scenario == "d":
                flag = "**yes**" if row.coalesce else ("no" if row.stats_route else "-")
                head = f"| {label} | `{row.path}` | {flag} |"
            if r.skipped:
                w.append(f"{head} {r.skipped} |")
                continue
            if r.problems and r.rps == 0:
                w.append(f"{head} FAILED: {'; '.join(r.problems)} |")
                continue
            status = str(r.non_2xx) + (" **FAIL**" if r.problems else "")
            gw = pct(r.gw_cpu) if row.cpu else "-"
            if scenario == "a":
                us_req = fmt(r.gw_us_per_req, 1) if row.cpu else "-"
                split = cpu_parts(r, "a") if len(row.cpu) > 1 else ""
                w.append(f"{head} {fmt(r.rps, 0)} | {fmt(r.p50_ms)} ms | "
                         f"{fmt(r.p99_ms)} ms | {status} | {gw} | {us_req} | {split} | "
                         f"{pct(r.up_cpu)} | {pct(r.wrk_cpu)} | {pct(r.other_cpu)} |")
            elif scenario == "d":
                share = f"{r.coalesced_share:.1%}" if r.coalesced_share is not None else "n/a"
                w.append(f"{head} {fmt(r.rps, 0)} | {fmt(r.p50_ms)} ms | {fmt(r.p99_ms)} ms | "
                         f"{fmt(r.hits_per_s, 0)} | {r.hits_per_req:.3f} | {share} | {status} | "
                         f"{gw} | {fmt(r.gw_us_per_req, 1)} |")
            elif scenario == "b":
                over = ""
                if row.floor_ms == SLOWEST_MS and row.key not in ("plain_d", "direct"):
                    value = median(per_round(all_results, "b", (row.key, "plain_d"),
                                             lambda x, d: x.p50_ms - d.p50_ms))
                    over = f"{value:+.2f} ms" if value is not None else "n/a"
                w.append(f"{head} {row.floor_ms:g} ms | {fmt(r.rps, 0)} | "
                         f"{fmt(r.p50_ms)} ms | {fmt(r.p99_ms)} ms | {r.p50_ms - row.floor_ms:+.2f} ms | "
                         f"{r.p99_ms - row.floor_ms:+.2f} ms | {over} | {status} | {gw} |")
            else:
                w.append(f"{head} {row.floor_ms:g} ms | {fmt(r.rps, 0)} | "
                         f"{fmt(r.p50_ms)} ms | {fmt(r.p99_ms)} ms | {r.p50_ms - row.floor_ms:+.2f} ms | "
                         f"{r.p99_ms - row.floor_ms:+.2f} ms | {status} |")
        w.append("")
        if scenario == "b":
            w.append("*floor*: the slowest upstream the request waits for (nominal fault delay). The "
                     "Lua filter's calls run one after the other, so it waits for all four "
                     "(20 + 40 + 60 + 80 = 200 ms). *p50 - plain Envoy to d*: the row's p50 minus "
                     "that of plain Envoy proxying to d alone, the median of the per-round "
                     "differences: what the aggregation adds over the one call it must wait for, "
                     "through the same Envoy.\n")
        if scenario == "d":
            w += hot_path_notes(all_results)

    w.append("## Ratios and targets (issue 14)\n")
    w.append("| Ratio | Formula | Value | Target | | Rounds | Also |")
    w.append("| --- | --- | ---: | --- | --- | --- | --- |")
    for r in rats:
        w.append(f"| {r.name} | {r.formula} | {ratio_value(r)} | {r.target or '-'} | "
                 f"**{r.verdict()}** | {ratio_rounds(r)} | {r.extra} |")
    w.append("")
    w.append("*Value*: the median over the interleaved rounds of the ratio computed within each "
             "round (*Rounds*, when there were several). CPU ratios are of CPU µs per request "
             "summed over the request path; *per CPU-second* computes a req/s ratio from CPU "
             "per request instead, which does not depend on how the machine's cores were shared "
             "between gateways, upstreams and wrk. Rows marked *info* are reported, not "
             "targets.\n")

    w.append("## Where we lose, where we win\n")
    w += standing(all_results, rats)
    w.append(f"Every figure above comes from `{command_line()}` (`make bench` builds the filter, "
             "the floor and the Rust BFF, and installs wrk, nginx and njs when missing). Compare "
             "rows within one run: absolute µs move with the machine's load.\n")

    if core:
        w.append("## Core micro-benchmark (`cargo bench --bench core`)\n")
        w.append("Native, no Envoy: one iteration is one request through the core (route match, "
                 "`Gather::start`, 4 answers of ~1 KB, the final response).\n")
        w.append("| Benchmark | Time (median estimate) |\n| --- | ---: |")
        for name, value in core:
            w.append(f"| `{name}` | {value} |")
        w.append("")

    w.append("## Notes\n")
    return "\n".join(w) + "\n"


# ---------------------------------------------------------------------------- main

H2_CLUSTER_OPTIONS = '''    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
'''


def http2_variant(config: str, ports: tuple[int, int], new_ports: tuple[int, int], out_dir: Path) -> str:
    """The gateway config with its own listener/admin ports and every cluster speaking HTTP/2
    (prior knowledge; the upstream Envoy's AUTO codec accepts it). Nothing else changes."""
    text = (ROOT / config).read_text()
    for old, new in zip(ports, new_ports):
        text = text.replace(f"port_value: {old} ", f"port_value: {new} ")
    text, clusters = re.subn(r"(\n  - name: [a-d]\n    type: STATIC\n)", r"\1" + H2_CLUSTER_OPTIONS, text)
    if clusters == 0 or any(f"port_value: {p} " in text for p in ports):
        die(f"cannot derive the HTTP/2 variant of {config}: its layout changed", 2)
    path = out_dir / Path(config).name.replace(".yaml", "-h2.yaml")
    path.write_text(text)
    return str(path)


def start_nginx(procs: Processes, nginx: Nginx) -> Proc | str:
    """The nginx + njs peer in its own prefix under the log directory: its Proc, or why it is
    skipped (it could not be installed, or did not start: its log is kept then)."""
    if nginx.skipped:
        return nginx.skipped
    prefix = procs.log_dir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = (ROOT / "benches/nginx/nginx.conf").read_text()
    conf = conf.replace("@NJS_MODULE@", nginx.module).replace("@BENCH_DIR@", str(ROOT / "benches/nginx"))
    (prefix / "nginx.conf").write_text(conf)
    proc = procs.start("nginx", [nginx.binary, "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "stderr"])
    try:
        wait_port(proc, NGINX_PORT)
    except Fatal as e:
        procs.stop(proc)
        global KEEP_LOGS
        KEEP_LOGS = True
        return f"skipped: nginx did not start ({e}; log: {proc.log})"
    return proc


def start_all(procs: Processes, node: str, nginx: Nginx) -> tuple[dict[str, int], dict[str, str]]:
    """Starts everything; the pids by name, and why an optional peer is missing."""
    say("Starting the upstreams, eight gateway Envoys, the Node.js and Rust BFFs and nginx...")
    up = procs.start("upstreams", envoy_argv("benches/envoy/upstreams.yaml", 2))
    filter_h2 = http2_variant("benches/envoy/gateway-filter.yaml", (FILTER_PORT, FILTER_ADMIN),
                              (FILTER_H2_PORT, FILTER_H2_ADMIN), procs.log_dir)
    plain_h2 = http2_variant("benches/envoy/gateway-plain.yaml", (PLAIN_PORT, PLAIN_ADMIN),
                             (PLAIN_H2_PORT, PLAIN_H2_ADMIN), procs.log_dir)
    gws = {
        "filter": (procs.start("filter", envoy_argv("benches/envoy/gateway-filter.yaml", 1)), FILTER_ADMIN),
        "plain": (procs.start("plain", envoy_argv("benches/envoy/gateway-plain.yaml", 1)), PLAIN_ADMIN),
        "lua": (procs.start("lua", envoy_argv("benches/envoy/gateway-lua.yaml", 1)), LUA_ADMIN),
        "filter-h2": (procs.start("filter-h2", envoy_argv(filter_h2, 1)), FILTER_H2_ADMIN),
        "plain-h2": (procs.start("plain-h2", envoy_argv(plain_h2, 1)), PLAIN_H2_ADMIN),
        "floor": (procs.start("floor", envoy_argv("benches/floor/gateway-floor.yaml", 1)), FLOOR_ADMIN),
        "hop": (procs.start("hop", envoy_argv("benches/envoy/gateway-hop.yaml", 1)), HOP_ADMIN),
    }
    env_ports = ",".join(str(UPSTREAM_PORTS[k]) for k in "abcd")
    os.environ["UPSTREAM_PORTS"] = env_ports
    bffs = {
        "node": (procs.start("node", [node, "benches/node/bff.js", str(NODE_PORT)]), NODE_PORT),
        "rust-bff": (procs.start("rust-bff", [str(RUST_BFF), str(RUST_BFF_PORT)]), RUST_BFF_PORT),
    }
    wait_envoy_ready(procs, up, UPSTREAM_ADMIN)
    for proc, admin in gws.values():
        wait_envoy_ready(procs, proc, admin)
    for proc, port in bffs.values():
        wait_port(proc, port)
    pids = {"upstreams": up.popen.pid}
    pids.update({name: proc.popen.pid for name, (proc, _) in gws.items()})
    pids.update({name: proc.popen.pid for name, (proc, _) in bffs.items()})
    skips = {}
    started = start_nginx(procs, nginx)
    if isinstance(started, str):
        skips["nginx"] = started
        say(f"  nginx + njs: {started}")
    else:
        pids["nginx"] = started.popen.pid
    say("  " + ", ".join(f"{name} pid {pid}" for name, pid in pids.items()))
    return pids, skips


def main() -> int:
    os.chdir(ROOT)
    for scenario in SCENARIOS:
        scenario_rows(scenario)  # validates the names
    node, wrk, nginx = preconditions()
    info = machine_info(node, wrk, nginx)
    wasm_bytes = WASM.stat().st_size
    say(f"Machine: {info['nproc']} CPUs, {info['cpu']}, {info['kernel']}; Envoy {info['envoy']}; "
        f"Node {info['node']}; nginx {info['nginx']}; {info['wrk']}; load average {info['loadavg']}")
    say(f"Runs: {DURATION:g} s each after a {WARMUP:g} s warm-up; scenarios {','.join(SCENARIOS)}"
        + (f"; {ROUNDS} rounds" if ROUNDS > 1 else ""))
    try:
        if float(info["loadavg"].split()[0]) > 0.5 * (os.cpu_count() or 1):
            say("Note: the machine is already busy (load average above); numbers will be noisy.")
    except ValueError:
        pass

    log_dir = Path(tempfile.mkdtemp(prefix="gateway-bench."))
    procs = Processes(log_dir)
    ok = False
    all_results: dict[str, ScenarioResults] = {}
    core: list[tuple[str, str]] = []
    try:
        pids, skips = start_all(procs, node, nginx)
        for scenario in SCENARIOS:
            all_results[scenario] = run_scenario(procs, wrk, scenario, pids, skips)
        ok = True
    finally:
        procs.stop_all()
        if ok and not KEEP_LOGS:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            say(f"Logs kept in {log_dir}")

    if CORE:
        core = run_core()
    rats = ratios(all_results, wasm_bytes)
    say("\nRatios (issue 14's targets; 'info': reported, not a target):")
    for r in rats:
        extra = f"   ({r.extra})" if r.extra else ""
        target = f"target {r.target}" if r.target else ""
        say(f"  {r.verdict():<4} {r.name:<38} {ratio_value(r):>11}  {target:<15}{extra}")

    if OUTPUT != "-":
        path = ROOT / OUTPUT
        notes = existing_notes(path)
        path.write_text(report(info, all_results, rats, wasm_bytes, wrk, core) + notes)
        say(f"\nWrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")

    failed = [f"{s}/{k}" for s, res in all_results.items() for k, r in res.median.items() if r.problems]
    if failed:
        say(f"FAILED: {', '.join(failed)} (see the lines marked FAIL above)")
        return 1
    if STRICT and any(r.ok is False for r in rats):
        say("STRICT=1: a target was missed")
        return 3
    return 0


def on_signal(signum, _frame):
    print(f"\nbench: {signal.Signals(signum).name}: stopping everything it started", file=sys.stderr)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    # Explicitly, also when started in the background (where SIGINT may arrive ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        sys.exit(main())
    except Fatal as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(e.status)
    except KeyboardInterrupt:
        print("\nbench: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
