#!/usr/bin/env python3
"""exai against peers on the same machine, in one run, over the same Redis and Postgres.

1. Cached `GET /v1/threads/{id}` of a 4 KiB thread document at 50 connections, against
   webdis (a C HTTP front for Redis) serving the same 4 KiB value from the same Redis.
2. Append-turn throughput, against pgbench running the same SQL function
   (`exai_append_turns`) on the same Postgres.

Usage: bench/dual_storage.py [path/to/exai] [seconds per run] [rounds]
Needs redis-server, PostgreSQL (initdb, postgres), webdis, wrk and pgbench. Everything
runs on loopback in temporary directories; the peers alternate with exai in each round.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
CONNECTIONS = 50
THREADS = 5000  # append targets, so no thread nears its turn limit
WORK = Path(tempfile.mkdtemp(prefix="exai-bench-"))
children = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start(args, **kwargs):
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    children.append(proc)
    return proc


def pg_bin():
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    return sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]


def as_postgres(args):
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *args] if os.geteuid() == 0 else args


def start_postgres():
    port, data = free_port(), WORK / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(WORK, "postgres")
        shutil.chown(data, "postgres")
    bin_dir = pg_bin()
    subprocess.run(as_postgres([bin_dir / "initdb", "-D", data / "data", "-U", "postgres", "--auth=trust",
                                "--no-sync", "-E", "UTF8", "--locale=C"]), check=True, capture_output=True)
    start(as_postgres([bin_dir / "postgres", "-D", data / "data", "-p", str(port), "-k", data,
                       "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]))
    wait_port(port)
    time.sleep(0.5)
    return port, bin_dir


def psql(bin_dir, url, sql):
    return subprocess.run([bin_dir / "psql", "-qAt", "-d", url, "-c", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return response.read()


def wrk_latency(url, script=None):
    """Requests per second, p50 and p99 in ms of one wrk run; any failed request is an error."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency"]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile_ms(q):
        found = re.search(rf"{q}%\s+([\d.]+)(us|ms|s)", out)
        return float(found.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[found.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests against {url}")
    return rps, percentile_ms(50), percentile_ms(99)


def wrk(url, script=None):
    rps, _, p99 = wrk_latency(url, script)
    return rps, p99


def thread_id(n):
    return f"00000000-0000-0000-0000-{n:012d}"


def create_numbered_threads(bin_dir, db, count):
    """Threads `thread_id(1)` to `thread_id(count)`, created in the store directly."""
    psql(bin_dir, db, f"SELECT count(exai_create_thread(('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid,"
                      f" NULL, NULL, NULL, '{{}}', now())) FROM generate_series(1, {count}) n")


def append_script(path, body, threads):
    """A wrk script appending `body` to one of `thread_id(1)` to `thread_id(threads)` at random."""
    path.write_text(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {json.dumps(body)}
request = function()
  local id = string.format("00000000-0000-0000-0000-%012d", math.random(1, {threads}))
  return wrk.format(nil, "/v1/threads/" .. id .. "/turns")
end
""")


def start_backends(exai):
    """A Redis and a migrated PostgreSQL: (redis port, database URL, PostgreSQL's bin directory)."""
    redis_port = free_port()
    start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    wait_port(redis_port)
    pg_port, bin_dir = start_postgres()
    db = f"postgres://postgres@127.0.0.1:{pg_port}/postgres"
    subprocess.run([exai, "migrate"], env={"DATABASE_URL": db, "PATH": os.environ["PATH"]}, check=True,
                   capture_output=True)
    return redis_port, db, bin_dir


def main():
    redis_port, db, bin_dir = start_backends(EXAI)

    exai_port = free_port()
    env = {"PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{exai_port}", "DATABASE_URL": db,
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "MAX_CONVERSATION_TURNS": "1000",
           "RUST_LOG": "warn"}
    start([EXAI], env=env)
    wait_port(exai_port)
    base = f"http://127.0.0.1:{exai_port}"

    # A thread whose document is 4 KiB, read once so Redis holds it.
    thread = json.loads(http("POST", f"{base}/v1/threads", {"title": "benchmark"}))
    for i in range(5):
        http("POST", f"{base}/v1/threads/{thread['id']}/turns", {"role": "user", "content": "x" * 540})
    document = http("GET", f"{base}/v1/threads/{thread['id']}")
    time.sleep(1)
    document = http("GET", f"{base}/v1/threads/{thread['id']}")

    webdis_port = free_port()
    config = WORK / "webdis.json"
    config.write_text(json.dumps({"redis_host": "127.0.0.1", "redis_port": redis_port, "http_host": "127.0.0.1",
                                  "http_port": webdis_port, "threads": 2, "daemonize": False,
                                  "database": 0, "verbosity": 0, "logfile": str(WORK / "webdis.log")}))
    subprocess.run(["redis-cli", "-p", str(redis_port), "SET", "bench:doc", document], check=True,
                   capture_output=True)
    start(["webdis", str(config)])
    wait_port(webdis_port)
    assert http("GET", f"http://127.0.0.1:{webdis_port}/GET/bench:doc.txt") == document

    # Append targets, with ids pgbench can compute.
    create_numbered_threads(bin_dir, db, 2 * THREADS)
    body = json.dumps({"role": "user", "content": "benchmark turn " + "y" * 200})
    script = WORK / "append.lua"
    append_script(script, body, THREADS)
    pgbench_script = WORK / "append.sql"
    pgbench_script.write_text(f"""\\set n random({THREADS + 1}, {2 * THREADS})
SELECT exai_append_turns(('00000000-0000-0000-0000-' || lpad(:n::text, 12, '0'))::uuid, '[{body}]'::jsonb, NULL, 1000, 86400000, now(), 2);
""")

    reads, appends = [], []
    for _ in range(ROUNDS):
        exai_read = wrk(f"{base}/v1/threads/{thread['id']}")
        webdis_raw = wrk(f"http://127.0.0.1:{webdis_port}/GET/bench:doc.txt")
        webdis_json = wrk(f"http://127.0.0.1:{webdis_port}/GET/bench:doc")
        reads.append((exai_read, webdis_raw, webdis_json))
        exai_append = wrk(base, str(script))
        out = subprocess.run([bin_dir / "pgbench", "-n", "-c", str(CONNECTIONS), "-j", "2", "-T", str(SECONDS),
                              "-f", pgbench_script, db], check=True, capture_output=True, text=True).stdout
        pgbench_tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
        appends.append((exai_append[0], pgbench_tps))

    print(f"document size: {len(document)} bytes; {CONNECTIONS} connections; {SECONDS} s per run\n")
    print("webdis raw: `GET /GET/bench:doc.txt`, the value's bytes as they are; "
          "webdis JSON: `GET /GET/bench:doc`, webdis's default, the value escaped into JSON\n")
    print("| round | exai req/s (p99 ms) | webdis raw req/s (p99 ms) | ratio | webdis JSON req/s (p99 ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for n, ((e, ep99), (w, wp99), (j, jp99)) in enumerate(reads, 1):
        print(f"| {n} | {e:.0f} ({ep99:.2f}) | {w:.0f} ({wp99:.2f}) | {e / w:.2f} | {j:.0f} ({jp99:.2f}) | {e / j:.2f} |")
    print("\n| round | exai append req/s | pgbench tps | ratio |")
    print("|---|---|---|---|")
    for n, (e, p) in enumerate(appends, 1):
        print(f"| {n} | {e:.0f} | {p:.0f} | {e / p:.2f} |")


def run(main):
    """Runs a benchmark, then stops every process it started and removes its files."""
    try:
        main()
    finally:
        for child in children:
            child.kill()
            child.wait()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    run(main)
