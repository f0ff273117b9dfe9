#!/usr/bin/env python3
"""`/healthz` latency with every backend up (results reused within the cache window), and
how long `/healthz` takes to answer when the store hangs.

Usage: bench/health.py [path/to/exai] [calls]
Starts redis-server, a PostgreSQL cluster and exai (Postgres store, Redis cache) on loopback,
then a second exai whose store is a listener that accepts connections and never answers.
"""
import http.client
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dual_storage import free_port, run, start, start_backends, wait_port  # noqa: E402

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 1000


def timed_get(port, path="/healthz"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    began = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return (time.perf_counter() - began) * 1000, response.status


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def serve(env):
    port = free_port()
    start([EXAI], env={"PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{port}", "RUST_LOG": "warn", **env})
    wait_port(port)
    return port


def hung_listener():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in iter(int, 1)], daemon=True).start()
    return listener.getsockname()[1]


def main():
    redis_port, db, _ = start_backends(EXAI)
    up = serve({"DATABASE_URL": db, "REDIS_URL": f"redis://127.0.0.1:{redis_port}"})
    timed_get(up)  # the first call probes; the rest within the window reuse it
    latencies = []
    for _ in range(CALLS):
        ms, status = timed_get(up)
        assert status == 200, status
        latencies.append(ms)
    print(f"/healthz, Postgres + Redis up, {CALLS} sequential calls (one connection each): "
          f"p50 {statistics.median(latencies):.2f} ms, p99 {percentile(latencies, 99):.2f} ms, "
          f"max {max(latencies):.2f} ms")

    hung = serve({"DATABASE_URL": f"postgres://postgres@127.0.0.1:{hung_listener()}/exai",
                  "EXAI_HEALTH_CACHE_MS": "0"})
    answers = [timed_get(hung) for _ in range(5)]
    assert all(status == 503 for _, status in answers), answers
    print("/healthz with the store hung (EXAI_HEALTH_TIMEOUT_MS=2000, no reuse), 5 calls: "
          + ", ".join(f"{ms:.0f} ms" for ms, _ in answers))


if __name__ == "__main__":
    run(main)
