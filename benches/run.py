#!/usr/bin/env python3
"""The gateway benchmark (`make bench`): the filter against plain Envoy, a Node.js BFF and an
Envoy Lua filter, side by side in one run, same upstreams, same load generator (wrk).

Started here, stopped here (by pid, also on Ctrl-C and on errors):
  upstreams     benches/envoy/upstreams.yaml       Envoy --concurrency 2, ports 18101..18104
  filter        benches/envoy/gateway-filter.yaml  Envoy --concurrency 1, port 18001
  plain         benches/envoy/gateway-plain.yaml   Envoy --concurrency 1, port 18002
  node          benches/node/bff.js                one Node.js process, port 18004
  lua           benches/envoy/gateway-lua.yaml     Envoy --concurrency 1, port 18005
  filter-h2     gateway-filter.yaml, HTTP/2 to a..d Envoy --concurrency 1, port 18006
  plain-h2      gateway-plain.yaml, HTTP/2 to a     Envoy --concurrency 1, port 18007
                (both derived at run time: the same configs with the clusters speaking HTTP/2)

Scenarios (wrk -t1 --latency, every row warmed up first):
  a  upstreams at 0 ms: throughput at saturation (-c32)
  b  upstreams at 20/40/60/80 ms: latency at moderate load (-c8), added over the 80 ms floor
  c  call d takes 1000 ms and times out at 200 ms (-c8): answer time against the timeout

Writes BENCHMARKS.md (keeping its "## Notes" section) and prints the ratios with their targets.

Environment:
  DURATION=10     seconds per measured run       QUICK=1        2 s runs, 1 s warm-ups
  WARMUP=2        seconds of warm-up per run     ROUNDS=1       interleaved rounds (median)
  SCENARIOS=a,b,c scenarios to run               OUTPUT=BENCHMARKS.md  report ("-": none)
  CONNECTIONS_A=32, CONNECTIONS_B=8, CONNECTIONS_C=8, WRK_THREADS=1
  ENVOY_BIN (default .venv/bin/envoy), NODE_BIN (default node), KEEP_LOGS=1 keeps the logs,
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
import subprocess
import sys
import tempfile
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
ALL_PORTS = [*UPSTREAM_PORTS.values(), UPSTREAM_ADMIN, FILTER_PORT, FILTER_ADMIN, PLAIN_PORT,
             PLAIN_ADMIN, NODE_PORT, LUA_PORT, LUA_ADMIN, FILTER_H2_PORT, FILTER_H2_ADMIN,
             PLAIN_H2_PORT, PLAIN_H2_ADMIN]

SLOWEST_MS = 80.0  # scenario b: the slowest upstream (d)
CALL_TIMEOUT_MS = 200  # scenario c: call d's timeout (as in gateway-filter.yaml, bff.js, gateway-lua.yaml)
READY_TIMEOUT_S = 60.0

# Targets (from the issue).
TARGET_EXCHANGE = 0.85
TARGET_VS_NODE = 1.6
TARGET_PASSTHROUGH = 0.85
TARGET_ADDED_P50_MS = 1.5
TARGET_ADDED_P99_MS = 3.0
TARGET_WASM_BYTES = 500_000  # 500 KB


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
SCENARIOS = [s.strip() for s in os.environ.get("SCENARIOS", "a,b,c").split(",") if s.strip()]
CONNECTIONS = {
    "a": env_int("CONNECTIONS_A", 32),
    "b": env_int("CONNECTIONS_B", 8),
    "c": env_int("CONNECTIONS_C", 8),
}
WRK_THREADS = max(1, env_int("WRK_THREADS", 1))
OUTPUT = os.environ.get("OUTPUT", "BENCHMARKS.md")
KEEP_LOGS = os.environ.get("KEEP_LOGS", "") not in ("", "0")
STRICT = os.environ.get("STRICT", "") not in ("", "0")
CORE = os.environ.get("CORE", "") not in ("", "0")
ENVOY_BIN = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv/bin/envoy")
NODE_BIN = os.environ.get("NODE_BIN") or "node"


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

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            stop(proc.popen)
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

def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk not found: installing the Debian package (apt-get install -y wrk)...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "env": env}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
        wrk = shutil.which("wrk")
        if wrk:
            return wrk
        die("could not install wrk with apt-get; install it yourself and retry", 2)
    die("wrk (the HTTP load generator) is not installed. Install it, e.g. "
        "'sudo apt-get install wrk' (Debian/Ubuntu) or 'brew install wrk', and retry.", 2)


def preconditions() -> tuple[str, str]:
    if not WASM.is_file():
        die(f"{WASM.relative_to(ROOT)} not found: run 'make build' first", 2)
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
    return node, wrk


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def machine_info(node: str, wrk: str) -> dict[str, str]:
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
        "python": platform.python_version(),
        "commit": commit + (" (with uncommitted changes in src/ or Cargo.toml)" if dirty else ""),
        "loadavg": " ".join(load),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------------- correctness

def check_json(port: int, path: str, expect: str) -> str | None:
    """None when the answer is right, else what is wrong. `expect`: 'aggregate' (a..d),
    'timeout' (a..c, not d, answered after about 200 ms), 'single' (service a), 'single-d'."""
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


# ---------------------------------------------------------------------------- wrk

@dataclass
class Row:
    key: str
    label: str
    port: int
    path: str
    expect: str
    cpu_of: str  # name of the process whose CPU is the gateway's ("" for none)
    floor_ms: float = 0.0
    reference: bool = False  # not a gateway: a reference row


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
    problems: list[str] = field(default_factory=list)

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
    gw_pid, up_pid = pids.get(row.cpu_of), pids["upstreams"]
    gw0 = cpu_seconds(gw_pid) if gw_pid else 0.0
    up0 = cpu_seconds(up_pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = machine_busy_seconds()
    t0 = time.monotonic()
    out = run_wrk(procs, wrk_argv(wrk, connections, DURATION, url), DURATION + 30)
    wall = time.monotonic() - t0
    busy1 = machine_busy_seconds()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_wrk(out)
    if gw_pid:
        result.gw_cpu = (cpu_seconds(gw_pid) - gw0) / wall
    result.up_cpu = (cpu_seconds(up_pid) - up0) / wall
    result.busy = (busy1 - busy0) / wall
    result.wrk_cpu = ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall
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
        problems=[p for r in results for p in r.problems],
    )


# ---------------------------------------------------------------------------- scenarios

SCENARIO_TITLES = {
    "a": "Scenario a: throughput at saturation (upstreams at 0 ms)",
    "b": "Scenario b: latency at moderate load (upstreams a..d at 20/40/60/80 ms)",
    "c": "Scenario c: one of four calls times out (d takes 1000 ms, its timeout is 200 ms)",
}


def scenario_rows(scenario: str) -> list[Row]:
    if scenario == "a":
        return [
            Row("fanout", "filter, fan-out x4", FILTER_PORT, "/agg", "aggregate", "filter"),
            Row("plain", "plain Envoy proxy, 1 call", PLAIN_PORT, "/plain/0ms", "single", "plain"),
            Row("pass", "filter installed, pass-through", FILTER_PORT, "/plain/0ms", "single", "filter"),
            Row("node", "Node.js BFF, fan-out x4", NODE_PORT, "/agg", "aggregate", "node"),
            Row("lua", "Envoy Lua, 4 sequential calls", LUA_PORT, "/agg", "aggregate", "lua"),
            Row("fanout_h2", "filter, fan-out x4, HTTP/2 upstreams", FILTER_H2_PORT, "/agg",
                "aggregate", "filter-h2"),
            Row("plain_h2", "plain Envoy proxy, HTTP/2 upstream", PLAIN_H2_PORT, "/plain/0ms",
                "single", "plain-h2"),
            Row("direct", "upstream a directly (reference)", UPSTREAM_PORTS["a"], "/0ms", "single",
                "", reference=True),
        ]
    if scenario == "b":
        return [
            Row("fanout", "filter, fan-out x4", FILTER_PORT, "/agg/delay", "aggregate", "filter", 80),
            Row("plain", "plain Envoy proxy, 1 call (a)", PLAIN_PORT, "/plain/delay", "single", "plain", 20),
            Row("pass", "filter installed, pass-through (a)", FILTER_PORT, "/plain/delay", "single",
                "filter", 20),
            Row("node", "Node.js BFF, fan-out x4", NODE_PORT, "/agg/delay", "aggregate", "node", 80),
            Row("lua", "Envoy Lua, 4 sequential calls", LUA_PORT, "/agg/delay", "aggregate", "lua", 80),
            Row("direct", "upstream d directly (reference)", UPSTREAM_PORTS["d"], "/delay", "single-d",
                "", 80, reference=True),
        ]
    if scenario == "c":
        return [
            Row("fanout", "filter, fan-out x4", FILTER_PORT, "/agg/timeout", "timeout", "filter", CALL_TIMEOUT_MS),
            Row("node", "Node.js BFF, fan-out x4", NODE_PORT, "/agg/timeout", "timeout", "node", CALL_TIMEOUT_MS),
            Row("lua", "Envoy Lua, 4 sequential calls", LUA_PORT, "/agg/timeout", "timeout", "lua", CALL_TIMEOUT_MS),
        ]
    die(f"unknown scenario {scenario!r} in SCENARIOS (use a, b, c)", 2)


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def console_line(row: Row, r: Result, scenario: str) -> str:
    text = (f"  {row.label:<37} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:>8.2f} ms  "
            f"p99 {r.p99_ms:>8.2f} ms")
    if scenario in ("b", "c"):
        text += f"  (+{r.p50_ms - row.floor_ms:.2f} / +{r.p99_ms - row.floor_ms:.2f} ms over {row.floor_ms:g})"
    if row.cpu_of:
        text += f"  cpu: gw {pct(r.gw_cpu)}" + (f" ({r.gw_us_per_req:.0f} µs/req)" if scenario == "a" else "")
    else:
        text += "  cpu:"
    text += f" up {pct(r.up_cpu)} wrk {pct(r.wrk_cpu)} other {pct(r.other_cpu)}"
    if r.problems:
        text += "  FAIL: " + "; ".join(r.problems)
    return text


def run_scenario(procs: Processes, wrk: str, scenario: str, pids: dict[str, int]) -> dict[str, Result]:
    rows = scenario_rows(scenario)
    connections = CONNECTIONS[scenario]
    say(f"\n{SCENARIO_TITLES[scenario]}: wrk -t{min(WRK_THREADS, connections)} -c{connections} "
        f"-d{DURATION:g}s --latency" + (f", {ROUNDS} rounds (median run)" if ROUNDS > 1 else ""))
    failures: dict[str, list[str]] = {}
    for row in rows:
        problem = check_json(row.port, row.path, row.expect)
        if problem:
            failures[row.key] = [f"wrong answer before the run: {problem}"]
            say(f"  {row.label:<37} FAIL: {problem}")
    runs: dict[str, list[Result]] = {row.key: [] for row in rows}
    for round_no in range(ROUNDS):
        if ROUNDS > 1:
            say(f" round {round_no + 1}/{ROUNDS}")
        for row in rows:
            if row.key in failures:
                continue
            r = measure(procs, wrk, row, connections, pids)
            runs[row.key].append(r)
            say(console_line(row, r, scenario))
    results = {}
    for row in rows:
        if row.key in failures:
            results[row.key] = Result(problems=failures[row.key])
        else:
            results[row.key] = median_result(runs[row.key], "rps" if scenario == "a" else "p50_ms")
    if ROUNDS > 1:
        say(" median:")
        for row in rows:
            say(console_line(row, results[row.key], scenario))
    return results


# ---------------------------------------------------------------------------- ratios

@dataclass
class Ratio:
    name: str
    formula: str
    value: float | None
    target: str
    ok: bool | None
    extra: str = ""

    def verdict(self) -> str:
        if self.ok is None:
            return "n/a"
        return "PASS" if self.ok else "MISS"


def ratios(all_results: dict[str, dict[str, Result]], wasm_bytes: int) -> list[Ratio]:
    def get(scenario: str, key: str) -> Result | None:
        r = all_results.get(scenario, {}).get(key)
        return r if r and not r.problems and r.rps > 0 else None

    def throughput(name: str, formula: str, num: str, den: str, scale: float, target: float) -> Ratio:
        """num req/s / den req/s x scale; also from CPU per request (den's over num's)."""
        n, d = get("a", num), get("a", den)
        if not (n and d):
            return Ratio(name, formula, None, f">= {target}", None)
        value = n.rps / d.rps * scale
        extra = ""
        if n.gw_cpu and d.gw_cpu:
            extra = f"per gateway CPU-second: {d.gw_us_per_req / n.gw_us_per_req * scale:.2f}"
        return Ratio(name, formula, value, f">= {target}", value >= target, extra)

    out = [
        throughput("exchange efficiency", "(fan-out x4 req/s x 5) / (plain req/s x 2)",
                   "fanout", "plain", 5 / 2, TARGET_EXCHANGE),
        throughput("fan-out vs Node.js BFF", "fan-out x4 req/s / Node BFF req/s",
                   "fanout", "node", 1.0, TARGET_VS_NODE),
        throughput("pass-through vs plain", "pass-through req/s / plain req/s",
                   "pass", "plain", 1.0, TARGET_PASSTHROUGH),
        throughput("exchange efficiency, HTTP/2 upstreams",
                   "(fan-out x4 h2 req/s x 5) / (plain h2 req/s x 2)",
                   "fanout_h2", "plain_h2", 5 / 2, TARGET_EXCHANGE),
    ]
    lat, direct = get("b", "fanout"), get("b", "direct")
    for pname, target in (("p50", TARGET_ADDED_P50_MS), ("p99", TARGET_ADDED_P99_MS)):
        name = f"added {pname} latency (scenario b)"
        formula = f"fan-out x4 {pname} - {SLOWEST_MS:g} ms (slowest upstream)"
        if not lat:
            out.append(Ratio(name, formula, None, f"<= {target} ms", None))
            continue
        attr = f"{pname}_ms"
        value = getattr(lat, attr) - SLOWEST_MS
        extra = ""
        if direct:
            over_direct = getattr(lat, attr) - getattr(direct, attr)
            extra = (f"over upstream d measured directly: {over_direct:+.2f} ms "
                     f"({'PASS' if over_direct <= target else 'MISS'})")
        out.append(Ratio(name, formula, value, f"<= {target} ms", value <= target, extra))
    out.append(Ratio(".wasm size", str(WASM.relative_to(ROOT)), wasm_bytes / 1000,
                     f"<= {TARGET_WASM_BYTES // 1000} KB", wasm_bytes <= TARGET_WASM_BYTES,
                     f"{wasm_bytes:,} bytes"))
    return out


def ratio_value(r: Ratio) -> str:
    if r.value is None:
        return "n/a"
    if "latency" in r.name:
        return f"{r.value:+.2f} ms"
    if "size" in r.name:
        return f"{r.value:,.1f} KB"
    return f"{r.value:.2f}"


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
    for name in ("QUICK", "DURATION", "WARMUP", "ROUNDS", "SCENARIOS", "CONNECTIONS_A",
                 "CONNECTIONS_B", "CONNECTIONS_C", "WRK_THREADS", "CORE"):
        if os.environ.get(name):
            parts.append(f"{name}={shlex.quote(os.environ[name])}")
    parts += ["python3", "benches/run.py"]
    return " ".join(parts)


def report(info: dict[str, str], all_results: dict[str, dict[str, Result]], rats: list[Ratio],
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
                       ("node", "Node.js"), ("wrk", "wrk"), ("python", "Python"),
                       ("commit", "commit"), ("loadavg", "load average at start (1/5/15 min)"),
                       ("date", "date")):
        w.append(f"| {label} | {info[key]} |")
    w.append(f"| `.wasm` | {wasm_bytes:,} bytes |\n")
    w.append("## Command\n")
    w.append(f"```sh\n{command_line()}\n```\n")
    w.append(f"Each row: a {WARMUP:g} s warm-up, then "
             f"`{Path(wrk).name} -t{WRK_THREADS} -c<N> -d{DURATION:g}s --latency <url>`"
             + (f", {ROUNDS} interleaved rounds; each row shows its median run (by req/s in "
                "scenario a, by p50 in b and c)" if ROUNDS > 1 else "")
             + ". Upstreams: one Envoy (`benches/envoy/upstreams.yaml`, `--concurrency 2`) with "
             "four listeners a..d serving ~300-byte JSON bodies (`direct_response`), delays from "
             "the HTTP fault filter. Gateways: one Envoy worker each (`--concurrency 1`); the Node.js "
             "BFF is one process. Nothing is pinned to a CPU.\n")
    w.append("Gateways: **filter, fan-out x4**: `benches/envoy/gateway-filter.yaml`, one filter route, "
             "4 calls to a..d, nested layout; **plain Envoy proxy**: `benches/envoy/gateway-plain.yaml`, "
             "no filter, `/plain/*` routed to cluster a; **filter installed, pass-through**: the filter's "
             "Envoy, `/plain/*` matches no filter route and is proxied to cluster a through the filter "
             "chain (the filter is enabled on every route, the worst case); **Node.js BFF**: "
             "`benches/node/bff.js` (`http` + keep-alive `Agent`, `Promise.all`, `JSON.parse`/"
             "`JSON.stringify`); **Envoy Lua**: `benches/envoy/gateway-lua.yaml`, `httpCall` four times "
             "(sequential), string concatenation; **HTTP/2 upstreams** (scenario a): the filter's "
             "and the plain proxy's configs as they are, but every cluster speaking HTTP/2 to the "
             "upstreams (`explicit_http_config: {http2_protocol_options: {}}`, derived at run time "
             "by `http2_variant` in `benches/run.py`).\n")
    w.append("Columns: *gateway CPU* is the gateway process's CPU time over the run's wall time "
             "(100% = one core), *CPU µs/req* that time per request; *upstream CPU* and *wrk CPU* "
             "the same for the upstream Envoy and the load generator; *other CPU* whatever else "
             f"kept the machine's {os.cpu_count()} cores busy meanwhile (other work on the machine, "
             "this script). A gateway below 100% at saturation was short of CPU, not of work.\n")

    for scenario in ("a", "b", "c"):
        if scenario not in all_results:
            continue
        results = all_results[scenario]
        rows = scenario_rows(scenario)
        w.append(f"## {SCENARIO_TITLES[scenario]}\n")
        w.append(f"`-c{CONNECTIONS[scenario]}`.\n")
        if scenario == "a":
            w.append("| Gateway | Path | req/s | p50 | p99 | non-2xx | gateway CPU | CPU µs/req | upstream CPU | wrk CPU | other CPU |")
            w.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        elif scenario == "b":
            w.append("| Gateway | Path | floor | req/s | p50 | p99 | added p50 | added p99 | non-2xx | gateway CPU |")
            w.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        else:
            w.append("| Gateway | Path | call timeout | req/s | p50 | p99 | p50 - timeout | p99 - timeout | non-2xx |")
            w.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            r = results.get(row.key)
            if r is None:
                continue
            label = f"_{row.label}_" if row.reference else row.label
            if r.problems and r.rps == 0:
                w.append(f"| {label} | `{row.path}` | FAILED: {'; '.join(r.problems)} |")
                continue
            status = str(r.non_2xx) + (" **FAIL**" if r.problems else "")
            gw = pct(r.gw_cpu) if row.cpu_of else "-"
            if scenario == "a":
                us = fmt(r.gw_us_per_req, 1) if row.cpu_of else "-"
                w.append(f"| {label} | `{row.path}` | {fmt(r.rps, 0)} | {fmt(r.p50_ms)} ms | "
                         f"{fmt(r.p99_ms)} ms | {status} | {gw} | {us} | {pct(r.up_cpu)} | {pct(r.wrk_cpu)} | "
                         f"{pct(r.other_cpu)} |")
            elif scenario == "b":
                w.append(f"| {label} | `{row.path}` | {row.floor_ms:g} ms | {fmt(r.rps, 0)} | "
                         f"{fmt(r.p50_ms)} ms | {fmt(r.p99_ms)} ms | {r.p50_ms - row.floor_ms:+.2f} ms | "
                         f"{r.p99_ms - row.floor_ms:+.2f} ms | {status} | {gw} |")
            else:
                w.append(f"| {label} | `{row.path}` | {row.floor_ms:g} ms | {fmt(r.rps, 0)} | "
                         f"{fmt(r.p50_ms)} ms | {fmt(r.p99_ms)} ms | {r.p50_ms - row.floor_ms:+.2f} ms | "
                         f"{r.p99_ms - row.floor_ms:+.2f} ms | {status} |")
        w.append("")
        if scenario == "b":
            w.append("*floor*: the slowest upstream the request waits for (nominal fault delay). The "
                     "Lua filter's calls run one after the other, so it waits for all four "
                     "(20 + 40 + 60 + 80 = 200 ms).\n")

    w.append("## Ratios and targets\n")
    w.append("| Ratio | Formula | Value | Target | | Also |")
    w.append("| --- | --- | ---: | --- | --- | --- |")
    for r in rats:
        w.append(f"| {r.name} | {r.formula} | {ratio_value(r)} | {r.target} | **{r.verdict()}** | {r.extra} |")
    w.append("")
    w.append("*Also*: the same ratio computed from the gateways' CPU time per request instead of "
             "req/s (exchanges per gateway CPU-second), which does not depend on how the machine's "
             "cores were shared between gateway, upstreams and wrk; and, for latency, the added "
             "latency over upstream d measured directly (wrk to d, no gateway).\n")

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


def start_all(procs: Processes, node: str) -> dict[str, int]:
    say("Starting the upstreams, five gateway Envoys and the Node.js BFF...")
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
    }
    env_ports = ",".join(str(UPSTREAM_PORTS[k]) for k in "abcd")
    os.environ["UPSTREAM_PORTS"] = env_ports
    bff = procs.start("node", [node, "benches/node/bff.js", str(NODE_PORT)])
    wait_envoy_ready(procs, up, UPSTREAM_ADMIN)
    for proc, admin in gws.values():
        wait_envoy_ready(procs, proc, admin)
    wait_port(bff, NODE_PORT)
    pids = {"upstreams": up.popen.pid, "node": bff.popen.pid}
    pids.update({name: proc.popen.pid for name, (proc, _) in gws.items()})
    say("  " + ", ".join(f"{name} pid {pid}" for name, pid in pids.items()))
    return pids


def main() -> int:
    os.chdir(ROOT)
    for scenario in SCENARIOS:
        scenario_rows(scenario)  # validates the names
    node, wrk = preconditions()
    info = machine_info(node, wrk)
    wasm_bytes = WASM.stat().st_size
    say(f"Machine: {info['nproc']} CPUs, {info['cpu']}, {info['kernel']}; Envoy {info['envoy']}; "
        f"Node {info['node']}; {info['wrk']}; load average {info['loadavg']}")
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
    all_results: dict[str, dict[str, Result]] = {}
    core: list[tuple[str, str]] = []
    try:
        pids = start_all(procs, node)
        for scenario in SCENARIOS:
            all_results[scenario] = run_scenario(procs, wrk, scenario, pids)
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
    say("\nRatios (targets from the issue):")
    for r in rats:
        extra = f"   ({r.extra})" if r.extra else ""
        say(f"  {r.verdict():<4} {r.name:<34} {ratio_value(r):>11}  target {r.target}{extra}")

    if OUTPUT != "-":
        path = ROOT / OUTPUT
        notes = existing_notes(path)
        path.write_text(report(info, all_results, rats, wasm_bytes, wrk, core) + notes)
        say(f"\nWrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")

    failed = [f"{s}/{k}" for s, res in all_results.items() for k, r in res.items() if r.problems]
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
