#!/usr/bin/env python3
"""Time to serve each dashboard page with many threads stored (SQLite or PostgreSQL).

Usage: bench/dashboard.py [path/to/exai] [threads] [requests] [sqlite|postgres]
Starts the binary on a free port with a fresh data directory (and, for postgres, a fresh
PostgreSQL cluster migrated with `exai migrate`), creates `threads` threads
(default 100000) through the API over keep-alive connections from 8 threads, then
requests each page `requests` times (default 200) one after another on one keep-alive
connection, and prints p50 and p99 of the time from sending a request to reading the
whole answer (loopback, so nearly all of it is the server's).
"""
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/exai"
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
requests = int(sys.argv[3]) if len(sys.argv) > 3 else 200
backend = sys.argv[4] if len(sys.argv) > 4 else "sqlite"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create(port, count, ids):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for n in range(count):
        body = json.dumps({"title": f"thread number {n} about caching", "tool_name": "chat"})
        conn.request("POST", "/v1/threads", body, {"content-type": "application/json"})
        response = conn.getresponse()
        ids.append(json.loads(response.read())["id"])


def timings(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    spent = []
    for _ in range(requests):
        began = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        spent.append((time.perf_counter() - began) * 1000)
        assert response.status == 200, (path, response.status)
    spent.sort()
    return statistics.median(spent), spent[int(len(spent) * 0.99) - 1]


def store_env():
    """The environment that points exai at the chosen store, migrated."""
    if backend == "sqlite":
        return {}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from dual_storage import psql, start_postgres

    pg_port, bin_dir = start_postgres()
    url = f"postgres://postgres@127.0.0.1:{pg_port}/"
    psql(bin_dir, url + "postgres", "CREATE DATABASE exai")
    env = dict(os.environ, DATABASE_URL=url + "exai", RUST_LOG="warn")
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    return {"DATABASE_URL": url + "exai"}


with tempfile.TemporaryDirectory() as data_dir:
    port = free_port()
    env = dict(os.environ, EXAI_BIND=f"127.0.0.1:{port}", EXAI_DATA_DIR=data_dir, RUST_LOG="warn", **store_env())
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        ids = []
        workers = [threading.Thread(target=create, args=(port, threads // 8, ids)) for _ in range(8)]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        print(f"created {len(ids)} threads in {time.perf_counter() - began:.1f} s")
        pages = [
            ("`/dashboard`", "/dashboard"),
            ("`/dashboard/overview` (the refreshed part)", "/dashboard/overview"),
            ("`/dashboard/threads`", "/dashboard/threads"),
            ("`/dashboard/threads?q=number 4242` (11 matches)", "/dashboard/threads?q=number+4242"),
            ("`/dashboard/threads?q=caching` (every thread matches)", "/dashboard/threads?q=caching"),
            ("`/dashboard/threads?q=42` (too short for the index)", "/dashboard/threads?q=42"),
            ("`/dashboard/threads?status=expired`", "/dashboard/threads?status=expired"),
            ("`/dashboard/threads/{id}`", f"/dashboard/threads/{ids[len(ids) // 2]}"),
            ("`/dashboard/runs`", "/dashboard/runs"),
            ("`/dashboard/settings`", "/dashboard/settings"),
        ]
        print(f"{backend}:\n| page | p50 | p99 |\n|---|---|---|")
        for name, path in pages:
            p50, p99 = timings(port, path)
            print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms |")
    finally:
        proc.terminate()
        proc.wait()
        if backend != "sqlite":
            from dual_storage import WORK, children

            for child in children:
                child.kill()
                child.wait()
            shutil.rmtree(WORK, ignore_errors=True)
