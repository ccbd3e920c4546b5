#!/usr/bin/env python3
"""RSIO against NBD peers, measured in one run on one host.

The same 1 GiB file on /dev/shm is served three ways over loopback TCP:
  rsiod      (an RSIO volume on a pool file; fio drives it through librsio_fio.so)
  nbdkit     (nbdkit file plugin; fio's nbd engine)
  qemu-nbd   (raw; fio's nbd engine)
Workloads: 4 KiB random read at QD1 and QD32, 4 KiB random write at QD32, 1 MiB sequential
read at QD4. For rsiod and nbdkit the server's CPU time per I/O comes from /proc/PID/stat.

Each workload runs in rounds that alternate the servers, and the median of the rounds is
reported, so a noisy neighbour hits all of them alike. The result is a table of ratios
against nbdkit with the targets of the protocol issue; it exits non-zero only when a run
fails (a server or fio error), never because a target was missed.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, deadline_s=20):
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {deadline_s} s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def run_fio(job_text, runtime):
    with tempfile.NamedTemporaryFile("w", suffix=".fio", delete=False) as f:
        f.write(job_text)
        path = f.name
    try:
        r = subprocess.run(["fio", "--output-format=json", path], capture_output=True, text=True,
                           timeout=runtime + 60)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        raise RuntimeError(f"fio failed ({r.returncode}):\n{r.stderr}\n{r.stdout[-2000:]}")
    out = r.stdout[r.stdout.find("{"):]
    j = json.loads(out)["jobs"][0]
    if j["error"] != 0:
        raise RuntimeError(f"fio job error {j['error']}")
    rd, wr = j["read"], j["write"]
    ios = rd["total_ios"] + wr["total_ios"]
    iops = rd["iops"] + wr["iops"]
    side = rd if rd["total_ios"] else wr
    lat_us = side["clat_ns"]["percentile"].get("50.000000", side["clat_ns"]["mean"]) / 1000.0
    bw = (rd["bw_bytes"] + wr["bw_bytes"]) / 1048576.0
    return {"ios": ios, "iops": iops, "lat_p50_us": lat_us, "mib_s": bw}


WORKLOADS = [
    ("randread 4k QD1", "randread", "4k", 1),
    ("randread 4k QD32", "randread", "4k", 32),
    ("randwrite 4k QD32", "randwrite", "4k", 32),
    ("seqread 1M QD4", "read", "1m", 4),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="CMake build directory")
    ap.add_argument("--runtime", type=float, default=3.0, help="seconds per run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per workload")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--poll-us", type=int, default=0,
                    help="rsiod --poll-us for the extra QD1 measurement (the default run polls 50 us)")
    a = ap.parse_args()

    engine = os.path.join(a.bin_dir, "rsio", "librsio_fio.so")
    missing = [t for t in ("fio", "nbdkit", "qemu-nbd") if shutil.which(t) is None]
    if not os.path.exists(engine):
        missing.append(f"{engine} (build with scripts/fio-source.sh prepared)")
    if missing:
        print(f"SKIP: rsio_vs_nbd: missing {', '.join(missing)}")
        return 77
    nbd_ok = subprocess.run(["fio", "--enghelp=nbd"], capture_output=True).returncode == 0
    if not nbd_ok:
        print("SKIP: rsio_vs_nbd: this fio has no nbd engine")
        return 77

    work = tempfile.mkdtemp(prefix="rsio-bench-", dir="/dev/shm")
    procs = []
    try:
        image = os.path.join(work, "disk.img")
        with open(image, "wb") as f:
            f.truncate(1 << 30)
        # Fill it so reads are of real data on every server.
        subprocess.run(["dd", "if=/dev/urandom", f"of={image}", "bs=1M", "count=1024",
                        "conv=notrunc", "status=none"], check=True)

        # rsiod: a pool on a file the same size plus metadata room, one 1 GiB volume.
        state = os.path.join(work, "state")
        sock = os.path.join(work, "rsiod.sock")
        rport = free_port()
        log = open(os.path.join(work, "rsiod.log"), "w")
        rsiod = subprocess.Popen([os.path.join(a.bin_dir, "appliance", "rsiod"), "--state-dir",
                                  state, "--socket", sock, "--init-pool-size", "1100m",
                                  "--listen", f"127.0.0.1:{rport}", "--log-level", "warning"],
                                 stdout=log, stderr=subprocess.STDOUT)
        procs.append(rsiod)
        wait_port(rport, rsiod, "rsiod")
        env = dict(os.environ, RSIO_SOCKET=sock)
        for cmd in (["smgr", "-c", "bench", "-S", "1g"], ["rsadmin", "-c", "bench", "-k", "benchkey"],
                    ["rsadmin", "-g", "bench", "bench"]):
            subprocess.run([os.path.join(a.bin_dir, "cli", cmd[0])] + cmd[1:], env=env, check=True,
                           capture_output=True)
        keyfile = os.path.join(work, "key")
        with open(keyfile, "w") as f:
            f.write("benchkey\n")
        # Same data on the RSIO volume as in the file.
        # Write the whole volume once so reads return real data, as from the file.
        # (fio's command line does not take engine options named like its own: a job file.)
        job = (f"[fill]\nioengine=external:{engine}\nserver=127.0.0.1:{rport}\nnode=bench\n"
               f"keyfile={keyfile}\nvolume=bench\nrw=write\nbs=1m\niodepth=8\nsize=1g\n")
        run_fio(job, 60)

        nport = free_port()
        nbdkit = subprocess.Popen(["nbdkit", "--foreground", "--exit-with-parent", "-p", str(nport),
                                   "-i", "127.0.0.1", "file", image],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(nbdkit)
        wait_port(nport, nbdkit, "nbdkit")
        qport = free_port()
        qemu = subprocess.Popen(["qemu-nbd", "-f", "raw", "-b", "127.0.0.1", "-p", str(qport),
                                 "--persistent", "--shared=8", "--cache=writeback", "--aio=threads",
                                 image], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(qemu)
        wait_port(qport, qemu, "qemu-nbd")

        def job_for(server, rw, bs, qd):
            common = (f"rw={rw}\nbs={bs}\niodepth={qd}\ntime_based\nruntime={a.runtime}\n"
                      f"size=1g\nrandrepeat=0\nnorandommap\n")
            if server == "rsiod":
                return (f"[j]\nioengine=external:{engine}\nserver=127.0.0.1:{rport}\nnode=bench\n"
                        f"keyfile={keyfile}\nvolume=bench\n" + common)
            port = nport if server == "nbdkit" else qport
            return f"[j]\nioengine=nbd\nuri=nbd://127.0.0.1:{port}/\n" + common

        pids = {"rsiod": rsiod.pid, "nbdkit": nbdkit.pid, "qemu-nbd": qemu.pid}
        servers = ["rsiod", "nbdkit", "qemu-nbd"]
        results = {}
        for name, rw, bs, qd in WORKLOADS:
            runs = {s: [] for s in servers}
            for rnd in range(a.rounds):
                order = servers[rnd % 3:] + servers[:rnd % 3]
                for s in order:
                    c0 = cpu_seconds(pids[s])
                    r = run_fio(job_for(s, rw, bs, qd), a.runtime)
                    r["cpu_us_per_io"] = (cpu_seconds(pids[s]) - c0) * 1e6 / max(r["ios"], 1)
                    runs[s].append(r)
            results[name] = {s: {k: statistics.median(x[k] for x in runs[s])
                                 for k in runs[s][0]} for s in servers}

        # The same QD1 workload with rsiod polling differently before it sleeps (--poll-us), against
        # nbdkit again in the same rounds: the latency/CPU trade-off of that option.
        rsiod.send_signal(signal.SIGTERM)
        rsiod.wait(30)
        rsiod = subprocess.Popen([os.path.join(a.bin_dir, "appliance", "rsiod"), "--state-dir",
                                  state, "--socket", sock, "--listen", f"127.0.0.1:{rport}",
                                  "--log-level", "warning", "--poll-us", str(a.poll_us)],
                                 stdout=log, stderr=subprocess.STDOUT)
        procs.append(rsiod)
        wait_port(rport, rsiod, "rsiod --poll-us")
        pids["rsiod"] = rsiod.pid
        poll_name = f"rsiod --poll-us {a.poll_us}"
        runs = {poll_name: [], "nbdkit": []}
        for rnd in range(a.rounds):
            for s in ([poll_name, "nbdkit"] if rnd % 2 == 0 else ["nbdkit", poll_name]):
                pid = pids["rsiod" if s == poll_name else s]
                c0 = cpu_seconds(pid)
                r = run_fio(job_for("rsiod" if s == poll_name else s, "randread", "4k", 1),
                            a.runtime)
                r["cpu_us_per_io"] = (cpu_seconds(pid) - c0) * 1e6 / max(r["ios"], 1)
                runs[s].append(r)
        polled = {s: {k: statistics.median(x[k] for x in runs[s]) for k in runs[s][0]}
                  for s in runs}

        print(f"\nRSIO vs NBD on loopback, 1 GiB file on /dev/shm, median of {a.rounds} rounds "
              f"of {a.runtime:g} s")
        print(f"{'workload':<20}{'server':<10}{'IOPS':>10}{'MiB/s':>9}{'p50 us':>9}"
              f"{'CPU us/IO':>11}")
        for name, per in results.items():
            for s in servers:
                r = per[s]
                print(f"{name:<20}{s:<10}{r['iops']:>10.0f}{r['mib_s']:>9.1f}"
                      f"{r['lat_p50_us']:>9.1f}{r['cpu_us_per_io']:>11.2f}")
        R = lambda w, k, s="nbdkit": results[w]["rsiod"][k] / max(results[w][s][k], 1e-9)
        targets = [
            ("randread 4k QD32 IOPS vs nbdkit", R("randread 4k QD32", "iops"), ">=", 2.0),
            ("rsiod CPU per I/O vs nbdkit (randread QD32)",
             R("randread 4k QD32", "cpu_us_per_io"), "<=", 0.5),
            ("randread 4k QD1 p50 latency vs nbdkit", R("randread 4k QD1", "lat_p50_us"), "<", 1.0),
            ("seqread 1M QD4 MiB/s vs nbdkit", R("seqread 1M QD4", "mib_s"), ">=", 1.0),
        ]
        print("\nratios (rsiod / peer)")
        for name, _, _, _ in WORKLOADS:
            print(f"  {name:<20} IOPS vs nbdkit {R(name, 'iops'):.2f}   vs qemu-nbd "
                  f"{R(name, 'iops', 'qemu-nbd'):.2f}   CPU/IO vs nbdkit "
                  f"{R(name, 'cpu_us_per_io'):.2f}")
        print(f"\nrandread 4k QD1 with {poll_name} (nbdkit measured again in the same rounds)")
        for sname, r in polled.items():
            print(f"  {sname:<22}{r['iops']:>10.0f} IOPS  p50 {r['lat_p50_us']:7.1f} us  "
                  f"CPU {r['cpu_us_per_io']:7.2f} us/IO")
        poll_ratio = polled[poll_name]["lat_p50_us"] / max(polled["nbdkit"]["lat_p50_us"], 1e-9)
        print(f"  p50 latency ratio {poll_ratio:.2f}")
        print("\ntargets")
        for label, val, op, want in targets:
            ok = {">=": val >= want, "<=": val <= want, "<": val < want}[op]
            print(f"  {label:<46} {val:6.2f}  (target {op} {want})  {'met' if ok else 'MISSED'}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"results": results, "qd1_polling": polled,
                           "targets": [{"name": t[0], "value": t[1], "op": t[2], "target": t[3]}
                                       for t in targets]}, f, indent=2)
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"rsio_vs_nbd: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
