#!/usr/bin/env python3
"""What an append costs against the size of its thread, and what a big thread costs others.

On SQLite (with the in-process cache, the default) and on PostgreSQL with Redis:

1. Thread size: one client (`wrk -c1`) appending a 5-byte turn in turn to 4 empty
   threads, then to 4 threads each holding 19 turns of 1 MiB (19 MiB, within the default
   limit of 20 turns; the limit is raised for the run so that the small appends never reach
   it). p50 and p99 of each, and their ratio.
2. Head-of-line: one client appending to the small threads alone, while two other clients
   append to 4 other small threads (what any two other writers cost), and while two other
   clients append to the 19 MiB threads. p50 and p99 of the one client; the p99 ratio of
   the last to the first two.

Usage: bench/append_cost.py [path/to/exai] [seconds per run] [rounds]
Needs redis-server, PostgreSQL (initdb, postgres) and wrk; everything runs on loopback in
temporary directories.
"""
import json
import os
import re
import subprocess
import sys
import threading

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
del sys.argv[1:]  # dual_storage reads its own arguments from there when imported

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dual_storage import WORK, free_port, http, run, start, start_backends, wait_port  # noqa: E402

THREADS = 4
BIG_TURNS = 19
MIB = 1024 * 1024


def latency_ms(out, percentile):
    found = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    return float(found.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[found.group(2)]


def appending(base, ids, name):
    """A wrk script appending a 5-byte turn to each of `ids` in turn."""
    script = WORK / f"{name}.lua"
    script.write_text(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {json.dumps(json.dumps({"role": "user", "content": "hello"}))}
local ids = {{{", ".join(json.dumps(i) for i in ids)}}}
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/threads/" .. ids[n % #ids + 1] .. "/turns")
end
""")
    return script


def wrk(base, script, connections, seconds):
    args = ["wrk", f"-t{connections}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed appends: {out}")
    if int(re.search(r"(\d+) requests in", out).group(1)) == 0:
        return None, None  # not one append finished within the run
    return latency_ms(out, 50), latency_ms(out, 99)


def ms(value):
    return "none done" if value is None else f"{value:.2f}"


def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}"


def measure(name, env):
    port = free_port()
    start([EXAI], env={**env, "PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{port}",
                       "MAX_CONVERSATION_TURNS": "1000000", "RUST_LOG": "warn"})
    wait_port(port)
    base = f"http://127.0.0.1:{port}"

    def thread():
        return json.loads(http("POST", f"{base}/v1/threads", {"title": "bench"}))["id"]

    small = [thread() for _ in range(THREADS)]
    others = [thread() for _ in range(THREADS)]
    big = [thread() for _ in range(THREADS)]
    for id_ in big:
        for _ in range(BIG_TURNS):
            http("POST", f"{base}/v1/threads/{id_}/turns", {"role": "user", "content": "x" * MIB})
    small_script, big_script = appending(base, small, f"{name}-small"), appending(base, big, f"{name}-big")
    others_script = appending(base, others, f"{name}-others")

    def behind(script):
        """The one client's latencies while two others append with `script`, for longer."""
        background = threading.Thread(target=wrk, args=(base, script, 2, SECONDS + 2))
        background.start()
        measured = wrk(base, small_script, 1, SECONDS)
        background.join()
        return measured

    wrk(base, small_script, 1, 1)  # warm-up: connections, caches, the first pages of the files
    wrk(base, big_script, 1, 1)
    rows = []
    for _ in range(ROUNDS):
        empty = wrk(base, small_script, 1, SECONDS)
        full = wrk(base, big_script, 1, SECONDS)
        rows.append((empty, full, behind(others_script), behind(big_script)))

    print(f"\n### {name}\n")
    print("| round | empty p50 / p99 ms | 19 MiB p50 / p99 ms | p50 ratio | small, 2 on small p50 / p99 ms "
          "| small, 2 on 19 MiB p50 / p99 ms | p99 ratio to alone / to 2 on small |")
    print("|---|---|---|---|---|---|---|")
    for n, ((e50, e99), (f50, f99), (o50, o99), (b50, b99)) in enumerate(rows, 1):
        print(f"| {n} | {ms(e50)} / {ms(e99)} | {ms(f50)} / {ms(f99)} | {ratio(f50, e50)} "
              f"| {ms(o50)} / {ms(o99)} | {ms(b50)} / {ms(b99)} | {ratio(b99, e99)} / {ratio(b99, o99)} |")


def main():
    redis_port, db, _ = start_backends(EXAI)
    print(f"{SECONDS} s per run; one client appends 5-byte turns; {THREADS} threads of each size")
    (WORK / "sqlite").mkdir()
    measure("SQLite, in-process cache", {"EXAI_STORE": "sqlite", "EXAI_DATA_DIR": str(WORK / "sqlite")})
    measure("PostgreSQL, Redis", {"DATABASE_URL": db, "REDIS_URL": f"redis://127.0.0.1:{redis_port}"})


if __name__ == "__main__":
    run(main)
