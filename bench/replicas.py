#!/usr/bin/env python3
"""Throughput of 1, 2 and 3 exai replicas behind Caddy, and what Caddy costs against
talking to one exai directly, in one run.

One PostgreSQL store and one Redis; three exai processes on them; three Caddy processes
with the repository's `Caddyfile`, in front of the first one, two and three replicas
(`EXAI_UPSTREAM` lists them, space-separated). Two loads, `wrk -t2 -c50`:

1. Cached reads: `GET /v1/threads/{id}` of one of 100 threads of four 500-byte turns,
   read beforehand so that Redis holds them.
2. Appends: `POST /v1/threads/{id}/turns` of a 230-byte turn to one of 5,000 threads.

Each round runs both loads against exai directly and through each Caddy, starting one
target later every round, so that none always runs first or last.

Usage: bench/replicas.py [path/to/exai] [seconds per run] [rounds]
Needs redis-server, PostgreSQL (initdb, postgres), caddy and wrk. Everything runs on
loopback in temporary directories.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dual_storage as bench  # noqa: E402  (shares its argument handling, wrk runner and clean-up)

CADDYFILE = Path(__file__).resolve().parent.parent / "Caddyfile"
REPLICAS = 3
READ_THREADS = 100
APPEND_THREADS = 5000
TURN = "x" * 500


def start_replica(db, redis_port):
    port = bench.free_port()
    bench.start([bench.EXAI], env={"PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{port}",
                                   "DATABASE_URL": db, "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
                                   "MAX_CONVERSATION_TURNS": "100000", "RUST_LOG": "warn"})
    bench.wait_port(port)
    return f"127.0.0.1:{port}"


def start_caddy(upstreams):
    """Caddy with the repository's Caddyfile on a free port, its home in the work directory."""
    port = bench.free_port()
    home = bench.WORK / f"caddy-{port}"
    home.mkdir()
    bench.start(["caddy", "run", "--adapter", "caddyfile", "--config", CADDYFILE],
                env={"PATH": os.environ["PATH"], "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
                     "XDG_CONFIG_HOME": str(home / "config"), "CADDY_ADMIN": "off",
                     "EXAI_SITE": f"http://127.0.0.1:{port}", "EXAI_UPSTREAM": " ".join(upstreams)})
    bench.wait_port(port)
    return f"http://127.0.0.1:{port}"


def instances_behind(base, calls=60):
    """The instance ids that answer `/healthz` through `base` in `calls` requests, once
    Caddy serves."""
    deadline = time.time() + 30
    while True:
        try:
            bench.http("GET", f"{base}/livez")
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    return {json.loads(bench.http("GET", f"{base}/healthz"))["instance"] for _ in range(calls)}


def read_threads(base):
    """READ_THREADS threads of four turns, read until Redis holds them; their ids."""
    ids = []
    for _ in range(READ_THREADS):
        thread = json.loads(bench.http("POST", f"{base}/v1/threads", {"title": "benchmark"}))["id"]
        for _ in range(4):
            bench.http("POST", f"{base}/v1/threads/{thread}/turns", {"role": "user", "content": TURN})
        ids.append(thread)
    # A read right after a write may leave the cache alone; a second one a moment later fills it.
    for _ in range(2):
        time.sleep(1)
        for thread in ids:
            bench.http("GET", f"{base}/v1/threads/{thread}")
    return ids


def cached_keys(redis_port):
    out = subprocess.run(["redis-cli", "-p", str(redis_port), "--scan", "--pattern", "*:thread:*"],
                         check=True, capture_output=True, text=True).stdout
    return len(out.split())


def row(cells):
    print("| " + " | ".join(cells) + " |")


def table(name, rounds, targets):
    """One row per round: each target's figures, then Caddy in front of one replica against
    direct, and two and three replicas against one."""
    direct, one, two, three = targets
    ratios = {"Caddy / direct": (one, direct), "2 / 1": (two, one), "3 / 1": (three, one)}
    print(f"\n{name}: req/s (p50 / p99 ms); load is the 1-minute load average after the round\n")
    row(["round", "load", *targets, *ratios])
    print("|" + "---|" * (2 + len(targets) + len(ratios)))
    for n, (load, results) in enumerate(rounds, 1):
        figures = [f"{rps:,.0f} ({p50:.2f} / {p99:.2f})" for rps, p50, p99 in (results[t] for t in targets)]
        row([str(n), f"{load:.2f}", *figures,
             *(f"{results[a][0] / results[b][0]:.2f}" for a, b in ratios.values())])
    if len(rounds) > 1:
        row(["median", "", *[""] * len(targets),
             *(f"{statistics.median(r[a][0] / r[b][0] for _, r in rounds):.2f}" for a, b in ratios.values())])


def main():
    redis_port, db, bin_dir = bench.start_backends(bench.EXAI)
    replicas = [start_replica(db, redis_port) for _ in range(REPLICAS)]
    targets = {"direct, 1 replica": f"http://{replicas[0]}"}
    for n in range(1, REPLICAS + 1):
        caddy = start_caddy(replicas[:n])
        behind = instances_behind(caddy)
        if len(behind) != n:
            raise RuntimeError(f"Caddy in front of {n} replicas answered from {len(behind)} of them")
        targets[f"Caddy, {n} replica{'s' if n > 1 else ''}"] = caddy

    ids = read_threads(targets["direct, 1 replica"])
    if cached_keys(redis_port) < READ_THREADS:
        raise RuntimeError("the threads to read are not in Redis")
    read_script = bench.WORK / "read.lua"
    read_script.write_text(f"""
local ids = {{{",".join(json.dumps(i) for i in ids)}}}
request = function()
  return wrk.format("GET", "/v1/threads/" .. ids[math.random(1, #ids)])
end
""")
    bench.create_numbered_threads(bin_dir, db, APPEND_THREADS)
    append_script = bench.WORK / "append.lua"
    bench.append_script(append_script, json.dumps({"role": "user", "content": "benchmark turn " + "y" * 200}),
                        APPEND_THREADS)

    names = list(targets)
    loads = {"Cached reads": read_script, "Appends": append_script}
    rounds = {load: [] for load in loads}
    for n in range(bench.ROUNDS):
        order = names[n % len(names):] + names[:n % len(names)]
        results = {load: {name: bench.wrk_latency(targets[name], str(script)) for name in order}
                   for load, script in loads.items()}
        for load in loads:
            rounds[load].append((os.getloadavg()[0], results[load]))

    print(f"{REPLICAS} replicas on one PostgreSQL and one Redis; {bench.CONNECTIONS} connections; "
          f"{bench.SECONDS} s per run; {os.cpu_count()} CPUs")
    for load in loads:
        table(load, rounds[load], names)


if __name__ == "__main__":
    bench.run(main)
