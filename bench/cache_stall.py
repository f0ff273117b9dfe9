#!/usr/bin/env python3
"""Append latency while Redis is frozen (SIGSTOP), against the same appends with Redis answering.

With Redis answering, an append costs the store's commit plus a cache update; frozen, each
cache call gives up after 250 ms and the cache is then left alone for a second. The goal:
append p99 with Redis frozen ≤ p99 with Redis answering + 300 ms, i.e. no request pays more
than one cache timeout, however many wait on the same thread.

Two loads, each first with Redis answering, then frozen: bursts of 16 concurrent appends,
each burst to a new thread (where queued timeouts once added up to seconds), and 100
connections each appending to its own thread. Threads are new for every run and read once first, so that their entries are
cached and every append updates one. Postgres is the store.

Usage: bench/cache_stall.py [path/to/exai] [seconds per run] [rounds]
Needs redis-server and PostgreSQL (initdb, postgres). Everything runs on loopback in
temporary directories.
"""
import http.client
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dual_storage as bench  # noqa: E402  (shares its argument handling and clean-up)

BURST = 16
MANY_THREADS = 100
BODY = json.dumps({"role": "user", "content": "benchmark turn " + "y" * 200})


def post_turn(connection, thread, body, latencies, failures):
    started = time.monotonic()
    connection.request("POST", f"/v1/threads/{thread}/turns", body, {"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    latencies.append((time.monotonic() - started) * 1000)
    if response.status != 201:
        failures.append(response.status)


def check(latencies, failures):
    if failures:
        raise RuntimeError(f"{len(failures)} failed appends: {sorted(set(failures))}")
    return sorted(latencies)


def bursts(port, new_thread, size, seconds):
    """Bursts of `size` concurrent appends, each burst to a new thread; latencies in ms."""
    latencies, failures, current = [], [], [None]
    stop_at = time.monotonic() + seconds
    start, done = threading.Barrier(size + 1), threading.Barrier(size + 1)

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            start.wait()
            if current[0] is None:
                return
            post_turn(connection, current[0], BODY, latencies, failures)
            done.wait()

    clients = [threading.Thread(target=client) for _ in range(size)]
    for c in clients:
        c.start()
    while time.monotonic() < stop_at:
        current[0] = new_thread()
        start.wait()
        done.wait()
    current[0] = None
    start.wait()
    for c in clients:
        c.join()
    return check(latencies, failures)


def sustained(port, threads, seconds):
    """One client per thread, appending for `seconds`; latencies in ms."""
    latencies, failures = [], []
    stop_at = time.monotonic() + seconds

    def client(thread):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop_at:
            post_turn(connection, thread, BODY, latencies, failures)

    clients = [threading.Thread(target=client, args=(thread,)) for thread in threads]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    return check(latencies, failures)


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def main():
    redis_port, db, _ = bench.start_backends(bench.EXAI)
    redis = bench.children[0]
    port = bench.free_port()
    env = {"PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{port}", "DATABASE_URL": db,
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "MAX_CONVERSATION_TURNS": "1000000",
           "RUST_LOG": "error"}
    bench.start([bench.EXAI], env=env)
    bench.wait_port(port)
    base = f"http://127.0.0.1:{port}"

    def new_thread():
        thread = json.loads(bench.http("POST", f"{base}/v1/threads", {}))["id"]
        bench.http("GET", f"{base}/v1/threads/{thread}")  # cached, so that appends update the entry
        return thread

    loads = {f"bursts of {BURST} appends to one new thread": lambda: bursts(port, new_thread, BURST, bench.SECONDS),
             f"{MANY_THREADS} connections, one thread each": lambda: sustained(
                 port, [new_thread() for _ in range(MANY_THREADS)], bench.SECONDS)}
    rows = []
    for n in range(1, bench.ROUNDS + 1):
        for name, load in loads.items():
            answering = load()
            os.kill(redis.pid, signal.SIGSTOP)
            try:
                frozen = load()
            finally:
                os.kill(redis.pid, signal.SIGCONT)
            time.sleep(2)  # past the cool-down, so the next run starts with the cache in use
            rows.append((n, name, answering, frozen))

    print(f"{bench.SECONDS} s per run; latencies in ms, measured by the client\n")
    print("| round | load | Redis answering: appends, p50, p99 | Redis frozen: appends, p50, p99, max "
          "| p99 frozen − answering |")
    print("|---|---|---|---|---|")
    for n, name, answering, frozen in rows:
        a50, a99 = percentile(answering, 50), percentile(answering, 99)
        f50, f99 = percentile(frozen, 50), percentile(frozen, 99)
        print(f"| {n} | {name} | {len(answering)}, {a50:.1f}, {a99:.1f} "
              f"| {len(frozen)}, {f50:.1f}, {f99:.1f}, {frozen[-1]:.0f} | {f99 - a99:+.0f} |")


if __name__ == "__main__":
    bench.run(main)
