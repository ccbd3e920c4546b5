#!/usr/bin/env python3
"""Scale benchmark for rsiod and its CLIs.

Starts a private rsiod on a state directory in /dev/shm, fills it through the management
API with many volumes, clients and grants, times the listing commands of smgr and rsadmin
against it, then restarts the daemon on the same state and times the start-up. Prints a
summary table; exits 0 when every step worked and every listing's median wall time is
within --max-listing-seconds, 1 otherwise, 2 on usage errors.

Python 3 standard library only. See bench/README.md.
"""

import argparse
import ctypes
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTENT_BYTES = 4 << 20          # the default pool's extent size; every volume is one extent
POOL_SIZE = "64g"               # default pool on a sparse file
POOL_EXTENTS_USABLE = 16000     # 64 GiB / 4 MiB, less room for the label area
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
REQUEST_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 5.0
LOG_TAIL_LINES = 60
STARTUP_READ_SLACK_BYTES = 64 << 20   # start-up may read the database plus this much


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and how."""


def eprint(*args):
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# HTTP over the management socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over an AF_UNIX stream socket; counts the connections it opens."""

    def __init__(self, socket_path, timeout=REQUEST_TIMEOUT_S):
        super().__init__("rsiod", timeout=timeout)
        self.socket_path = socket_path
        self.connects = 0

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.connects += 1


class Api:
    """One keep-alive connection to rsiod's management API."""

    def __init__(self, socket_path):
        self.conn = UnixHTTPConnection(socket_path)
        self.requests = 0

    def call(self, method, target, body=None):
        """Returns (status, parsed JSON body, raw body text)."""
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, target, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            raise BenchError(f"{method} {target}: no answer from rsiod ({type(e).__name__}: {e})")
        self.requests += 1
        text = raw.decode(errors="replace").strip()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            raise BenchError(f"{method} {target}: HTTP {resp.status} with a body that is not "
                             f"JSON: {text[:300]!r}")
        return resp.status, parsed, text

    def get(self, target):
        status, parsed, text = self.call("GET", target)
        if status != 200:
            raise BenchError(f"GET {target} answered HTTP {status}: {text[:500]}")
        return parsed

    def close(self):
        self.conn.close()

    @property
    def connects(self):
        return self.conn.connects


# --------------------------------------------------------------------------------------------
# The daemon


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _child_setup():
    # rsiod gets SIGTERM if the benchmark dies without cleaning up (e.g. SIGKILL on timeout).
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Daemon:
    def __init__(self, rsiod, state_dir, socket_path, log_path):
        self.rsiod = rsiod
        self.state_dir = state_dir
        self.socket_path = socket_path
        self.log_path = log_path
        self.proc = None

    def start(self, extra_args=()):
        """Starts rsiod and waits until its API answers; returns the seconds that took."""
        cmd = [self.rsiod, "--state-dir", self.state_dir, "--socket", self.socket_path,
               "--listen", "127.0.0.1:0",
               *extra_args]
        with open(self.log_path, "ab") as log:
            log.write(f"==== {' '.join(cmd)}\n".encode())
            log.flush()
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_child_setup,
                                         start_new_session=True)
        return self.wait_ready(t0)

    def wait_ready(self, t0):
        deadline = t0 + READY_DEADLINE_S
        last = "socket not there yet"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise BenchError(f"rsiod exited with {describe_rc(rc)} before its API answered\n"
                                 + self.log_text(tail=None))
            now = time.perf_counter()
            if now > deadline:
                raise BenchError(f"rsiod's API did not answer within {READY_DEADLINE_S:.0f} s "
                                 f"(last attempt: {last})\n" + self.log_text(tail=None))
            conn = UnixHTTPConnection(self.socket_path, timeout=max(0.1, min(5.0, deadline - now)))
            try:
                conn.request("GET", "/1.0")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    return time.perf_counter() - t0
                last = f"GET /1.0 answered HTTP {resp.status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            finally:
                conn.close()
            time.sleep(0.005)

    def stop(self, deadline_s=STOP_DEADLINE_S):
        """SIGTERM, then waits; returns (seconds, exit code). Raises if it does not exit."""
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"rsiod did not exit within {deadline_s:.0f} s of SIGTERM; killed it")
        return time.perf_counter() - t0, rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill_quietly(self):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rchar(self):
        """Bytes rsiod read via read(2)-like calls so far (from /proc/PID/io), or None."""
        try:
            with open(f"/proc/{self.proc.pid}/io") as f:
                for line in f:
                    if line.startswith("rchar:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def log_text(self, tail=LOG_TAIL_LINES):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as e:
            return f"(cannot read rsiod's log {self.log_path}: {e})"
        head = "---- rsiod log"
        if tail is not None and len(lines) > tail:
            head += f" (last {tail} of {len(lines)} lines)"
            lines = lines[-tail:]
        return "\n".join([head + " ----", *lines, "---- end of rsiod log ----"])

    def crash_note(self):
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is not None:
                return f"; rsiod has exited with {describe_rc(rc)}"
        return ""


def describe_rc(rc):
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


# --------------------------------------------------------------------------------------------
# Measurements


def pct(values, q):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def create_many(api, daemon, kind, target, bodies):
    """POSTs every body to target, expecting 201 each; returns the rate statistics."""
    count = len(bodies)
    lat = []
    t0 = time.perf_counter()
    next_progress = t0 + PROGRESS_EVERY_S
    for i, body in enumerate(bodies):
        s = time.perf_counter()
        try:
            status, _, text = api.call("POST", target, body)
        except BenchError as e:
            raise BenchError(f"creating {kind} {i + 1}/{count}: {e}{daemon.crash_note()}")
        e = time.perf_counter()
        lat.append(e - s)
        if status != 201:
            raise BenchError(f"creating {kind} {i + 1}/{count}: POST {target} "
                             f"{json.dumps(body)} answered HTTP {status}: {text[:500]}")
        if e >= next_progress:
            eprint(f"  {kind}: {i + 1}/{count}, {(i + 1) / (e - t0):.0f}/s so far")
            next_progress = e + PROGRESS_EVERY_S
    seconds = time.perf_counter() - t0
    res = {"count": count, "seconds": seconds, "per_second": count / seconds if seconds else 0.0}
    if lat:
        tenth = max(1, count // 10)
        res.update({
            "latency_p50_ms": pct(lat, 50) * 1e3,
            "latency_p99_ms": pct(lat, 99) * 1e3,
            "latency_max_ms": max(lat) * 1e3,
            # A rate that drops from the first to the last tenth means per-request cost grows
            # with the amount of state.
            "first_tenth_per_second": tenth / sum(lat[:tenth]),
            "last_tenth_per_second": tenth / sum(lat[-tenth:]),
        })
    return res


def time_cli(name, cmd, runs, count_rows, expected_rows):
    """Runs cmd `runs` times; returns wall times, line count and the rows it listed."""
    walls = []
    lines = None
    rows = None
    for run in range(runs):
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BenchError(f"`{name}` run {run + 1} did not finish within {CLI_TIMEOUT_S:.0f} s")
        walls.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise BenchError(f"`{name}` run {run + 1} exited with {describe_rc(p.returncode)}: "
                             f"{p.stderr.decode(errors='replace').strip()[:1000]}")
        out = p.stdout.decode(errors="replace")
        n_lines = len(out.splitlines())
        n_rows = count_rows(out)
        if lines is not None and (n_lines, n_rows) != (lines, rows):
            raise BenchError(f"`{name}` printed {n_lines} lines ({n_rows} rows) on run {run + 1} "
                             f"but {lines} lines ({rows} rows) before")
        lines, rows = n_lines, n_rows
    res = {"runs": runs, "walls_seconds": walls, "median_seconds": statistics.median(walls),
           "max_seconds": max(walls), "lines": lines, "rows": rows, "expected_rows": expected_rows}
    if rows != expected_rows:
        raise BenchError(f"`{name}` listed {rows} rows, expected {expected_rows}")
    return res


def time_api_get(api, target, key, runs, expected):
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        body = api.get(target)
        walls.append(time.perf_counter() - t0)
        if len(body.get(key, [])) != expected:
            raise BenchError(f"GET {target} returned {len(body.get(key, []))} {key}, "
                             f"expected {expected}")
    return {"runs": runs, "walls_seconds": walls, "median_seconds": statistics.median(walls),
            "max_seconds": max(walls), "rows": expected, "expected_rows": expected}


def count_table_rows(out):
    lines = out.splitlines()
    return max(0, len(lines) - 1)   # minus the header


def count_lines(out):
    return len(out.splitlines())


def count_json_volumes(out):
    try:
        return len(json.loads(out)["volumes"])
    except (ValueError, KeyError, TypeError):
        return -1


def database_bytes(state_dir):
    """Size of the metadata database with its WAL and shared-memory files."""
    total = 0
    for f in os.listdir(state_dir):
        if f.startswith("rsio.db"):
            try:
                total += os.lstat(os.path.join(state_dir, f)).st_size
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------------------------
# Report


def fmt_s(x):
    return "-" if x is None else f"{x:.3f}"


def print_summary(r):
    cfg = r["config"]
    print()
    print(f"== summary: {cfg['volumes']} volumes, {cfg['clients']} clients, {cfg['grants']} "
          f"grants; {r['machine']['cpus']} CPUs, load average {r['machine']['loadavg_start']} "
          f"at start, {r['machine'].get('loadavg_end', '-')} at end")
    if r["create"]:
        print()
        print(f"{'create':<10} {'count':>7} {'seconds':>9} {'per s':>8} {'first10%/s':>11} "
              f"{'last10%/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for kind, c in r["create"].items():
            print(f"{kind:<10} {c['count']:>7} {c['seconds']:>9.2f} {c['per_second']:>8.0f} "
                  f"{c.get('first_tenth_per_second', 0):>11.0f} "
                  f"{c.get('last_tenth_per_second', 0):>10.0f} "
                  f"{c.get('latency_p50_ms', 0):>8.2f} {c.get('latency_p99_ms', 0):>8.2f} "
                  f"{c.get('latency_max_ms', 0):>8.1f}")
        if r.get("api_connections") is not None:
            print(f"({r['api_requests']} API requests over {r['api_connections']} connection(s))")
    if r["listings"]:
        print()
        limit = cfg["max_listing_seconds"]
        print(f"{'listing':<22} {'median s':>9} {'max s':>8} {'lines':>8} {'rows':>7} "
              f"{'expected':>9}  verdict")
        for name, l in r["listings"].items():
            cli = not name.startswith("GET ")
            verdict = ("ok" if l["median_seconds"] <= limit else f"SLOW (> {limit:g} s)") \
                if cli else "(API only, no limit)"
            print(f"{name:<22} {l['median_seconds']:>9.3f} {l['max_seconds']:>8.3f} "
                  f"{l.get('lines') if l.get('lines') is not None else '-':>8} {l['rows']:>7} "
                  f"{l['expected_rows']:>9}  {verdict}")
    if r.get("first_start_seconds") is not None:
        print()
        print(f"first start until the API answered: {fmt_s(r.get('first_start_seconds'))} s")
    if r["restart"]:
        s = r["restart"]
        print(f"stop (SIGTERM until exit):          {fmt_s(s.get('stop_seconds'))} s, "
              f"{s.get('stop_exit', '-')}")
        print(f"restart until the API answered:     {fmt_s(s.get('start_seconds'))} s")
        if s.get("rchar_bytes") is not None:
            print(f"  bytes read by rsiod until then:   {s['rchar_bytes'] / 2**20:.1f} MiB "
                  f"(database {s['database_bytes'] / 2**20:.1f} MiB; pool file "
                  f"{s['pool_file_bytes'] / 2**30:.0f} GiB apparent, "
                  f"{s['pool_file_allocated_bytes'] / 2**10:.0f} KiB allocated)")
        if s.get("persisted"):
            p = s["persisted"]
            print(f"  after restart: {p['volumes']} volumes, {p['clients']} clients, "
                  f"{p['grants']} grants")
    print()
    if r["ok"]:
        print("result: PASS")
    else:
        print("result: FAIL")
        for f in r["failures"]:
            print(f"  - {f.splitlines()[0]}")


# --------------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Scale benchmark: fills a private rsiod with volumes, clients and grants "
                    "through the management API, times the smgr/rsadmin listings and the "
                    "daemon's restart.")
    ap.add_argument("--volumes", type=int, default=10000, metavar="N",
                    help="volumes to create, 4 MiB (one extent) each (default 10000)")
    ap.add_argument("--clients", type=int, default=1000, metavar="M",
                    help="clients to register (default 1000)")
    ap.add_argument("--grants", type=int, default=20000, metavar="G",
                    help="grants to create, distinct (volume, client) pairs (default 20000)")
    ap.add_argument("--bin-dir", default=os.path.join(REPO_ROOT, "build", "release"),
                    help="build tree holding appliance/rsiod, cli/smgr and cli/rsadmin "
                         "(default: build/release of this checkout)")
    ap.add_argument("--runs", type=int, default=5,
                    help="runs of each timed listing (default 5)")
    ap.add_argument("--max-listing-seconds", type=float, default=1.0, metavar="S",
                    help="fail if a listing's median wall time exceeds this (default 1.0)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the state directory (database, pool file, rsiod.log)")
    ap.add_argument("--json-out", metavar="FILE", help="also write the results as JSON to FILE")
    a = ap.parse_args(argv)
    if a.volumes < 1 or a.clients < 1 or a.grants < 0 or a.runs < 1:
        ap.error("--volumes, --clients and --runs must be at least 1, --grants at least 0")
    if a.volumes > POOL_EXTENTS_USABLE:
        ap.error(f"--volumes: the {POOL_SIZE} default pool holds at most about "
                 f"{POOL_EXTENTS_USABLE} volumes of 4 MiB")
    if a.grants > a.volumes * a.clients:
        ap.error("--grants cannot exceed volumes x clients (grants are distinct pairs)")
    return a


def grant_pairs(n_volumes, n_clients, n_grants):
    """Distinct (volume index, client index) pairs: grant i goes to volume i % N and client
    (i // N + i % N) % M. For one volume the client index steps by one per round of N grants,
    and there are at most M rounds, so no pair repeats; clients are spread evenly."""
    pairs = [(i % n_volumes, (i // n_volumes + i % n_volumes) % n_clients)
             for i in range(n_grants)]
    if len(set(pairs)) != len(pairs):
        raise BenchError("internal error: grant pairs are not distinct")
    return pairs


def run(args, results):
    bin_dir = os.path.abspath(args.bin_dir)
    rsiod = os.path.join(bin_dir, "appliance", "rsiod")
    smgr = os.path.join(bin_dir, "cli", "smgr")
    rsadmin = os.path.join(bin_dir, "cli", "rsadmin")
    for b in (rsiod, smgr, rsadmin):
        if not os.access(b, os.X_OK):
            raise BenchError(f"{b} is missing or not executable; build first "
                             f"(scripts/build.sh) or pass --bin-dir")

    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        state_dir = tempfile.mkdtemp(prefix="rsio-bench-", dir=shm)
    else:
        state_dir = tempfile.mkdtemp(prefix="rsio-bench-")
        eprint(f"note: /dev/shm is not usable, using {state_dir}; timings include disk I/O")
    results["state_dir"] = state_dir
    sock = os.path.join(state_dir, "rsiod.sock")
    daemon = Daemon(rsiod, state_dir, sock, os.path.join(state_dir, "rsiod.log"))
    api = None
    try:
        eprint(f"state directory {state_dir}; binaries from {bin_dir}")
        results["first_start_seconds"] = daemon.start(["--init-pool-size", POOL_SIZE])
        eprint(f"rsiod answered after {results['first_start_seconds']:.3f} s")
        api = Api(sock)
        info = api.get("/1.0")
        results["rsiod_version"] = info.get("version")

        n, m, g = args.volumes, args.clients, args.grants
        width_v, width_c = len(str(n - 1)), len(str(m - 1))
        vname = [f"v{i:0{width_v}d}" for i in range(n)]
        cname = [f"c{j:0{width_c}d}" for j in range(m)]
        pairs = grant_pairs(n, m, g)

        eprint(f"creating {n} volumes")
        results["create"]["volumes"] = create_many(
            api, daemon, "volumes", "/1.0/volumes",
            [{"name": vname[i], "size_bytes": EXTENT_BYTES} for i in range(n)])
        eprint(f"registering {m} clients")
        results["create"]["clients"] = create_many(
            api, daemon, "clients", "/1.0/clients",
            [{"name": cname[j], "node_key": f"bench-key-{j}"} for j in range(m)])
        eprint(f"creating {g} grants")
        results["create"]["grants"] = create_many(
            api, daemon, "grants", "/1.0/grants",
            [{"volume": vname[v], "client": cname[c]} for v, c in pairs])
        results["api_requests"] = api.requests
        results["api_connections"] = api.connects
        api.close()   # idle during the CLI runs; the next API call reconnects

        granted_volumes = len({v for v, _ in pairs})
        sock_args = ["--socket", sock]
        listings = [
            ("smgr -q", [smgr, "-q", *sock_args], count_table_rows, n),
            ("rsadmin -q", [rsadmin, "-q", *sock_args], count_lines, m),
            ("rsadmin -qa", [rsadmin, "-qa", *sock_args], count_lines, granted_volumes),
            ("smgr -q --json", [smgr, "-q", "--json", *sock_args], count_json_volumes, n),
        ]
        for name, cmd, counter, expected in listings:
            eprint(f"timing `{name}` ({args.runs} runs)")
            try:
                results["listings"][name] = time_cli(name, cmd, args.runs, counter, expected)
            except BenchError as e:
                raise BenchError(f"{e}{daemon.crash_note()}")
            l = results["listings"][name]
            if l["median_seconds"] > args.max_listing_seconds:
                results["failures"].append(
                    f"`{name}` median {l['median_seconds']:.3f} s exceeds "
                    f"--max-listing-seconds {args.max_listing_seconds:g}")
        for target, key, expected in (("/1.0/volumes", "volumes", n),
                                      ("/1.0/clients", "clients", m),
                                      ("/1.0/grants", "grants", g)):
            eprint(f"timing GET {target} ({args.runs} runs)")
            results["listings"][f"GET {target}"] = time_api_get(api, target, key, args.runs,
                                                                expected)
        api.close()

        eprint("stopping rsiod (SIGTERM)")
        restart = results["restart"]
        stop_s, rc = daemon.stop()
        restart["stop_seconds"] = stop_s
        restart["stop_exit"] = describe_rc(rc)
        if rc != 0:
            raise BenchError(f"rsiod exited with {describe_rc(rc)} on SIGTERM\n"
                             + daemon.log_text())
        pool_file = os.path.join(state_dir, "pools", "default-0.img")
        restart["database_bytes"] = database_bytes(state_dir)
        try:
            st = os.stat(pool_file)
            restart["pool_file_bytes"] = st.st_size
            restart["pool_file_allocated_bytes"] = st.st_blocks * 512
        except OSError as e:
            raise BenchError(f"the default pool file is gone after stopping rsiod: {e}")

        eprint("restarting rsiod on the same state directory")
        restart["start_seconds"] = daemon.start()
        restart["rchar_bytes"] = daemon.rchar()
        eprint(f"rsiod answered after {restart['start_seconds']:.3f} s")
        # Start-up reads metadata only: the database and the PV labels, never volume data.
        read_limit = restart["database_bytes"] + STARTUP_READ_SLACK_BYTES
        if restart["rchar_bytes"] is not None and restart["rchar_bytes"] > read_limit:
            results["failures"].append(
                f"rsiod read {restart['rchar_bytes'] / 2**20:.0f} MiB before its API answered "
                f"after the restart, more than its {restart['database_bytes'] / 2**20:.1f} MiB "
                f"database + {STARTUP_READ_SLACK_BYTES >> 20} MiB: start-up reads pool data")
        api = Api(sock)
        persisted = {"volumes": len(api.get("/1.0/volumes")["volumes"]),
                     "clients": len(api.get("/1.0/clients")["clients"]),
                     "grants": len(api.get("/1.0/grants")["grants"])}
        restart["persisted"] = persisted
        if persisted != {"volumes": n, "clients": m, "grants": g}:
            raise BenchError(f"after the restart rsiod has {persisted}, expected "
                             f"{n} volumes, {m} clients, {g} grants")
        api.close()
        stop_s, rc = daemon.stop()
        if rc != 0:
            raise BenchError(f"rsiod exited with {describe_rc(rc)} on the final SIGTERM\n"
                             + daemon.log_text())
    except BenchError as e:
        results["failures"].append(str(e))
        eprint(f"FAILED: {e}")
        if "---- rsiod log" not in str(e):
            eprint(daemon.log_text())
    finally:
        if api is not None:
            api.close()
        daemon.kill_quietly()
        if args.keep:
            eprint(f"kept the state directory {state_dir} (rsiod.log is in it)")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(sig).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results = {
        "config": {"volumes": args.volumes, "clients": args.clients, "grants": args.grants,
                   "runs": args.runs, "max_listing_seconds": args.max_listing_seconds,
                   "bin_dir": os.path.abspath(args.bin_dir)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())},
        "create": {}, "listings": {}, "restart": {}, "failures": [],
    }
    started = time.perf_counter()
    try:
        run(args, results)
    except BenchError as e:
        results["failures"].append(str(e))
        eprint(f"FAILED: {e}")
    except KeyboardInterrupt as e:
        results["failures"].append(f"interrupted ({str(e) or 'SIGINT'})")
    results["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["total_seconds"] = time.perf_counter() - started
    results["ok"] = not results["failures"]
    print_summary(results)
    print(f"(total {results['total_seconds']:.1f} s)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
