#!/usr/bin/env python3
"""Append throughput on the embedded default, against the store it runs on.

16 concurrent clients (`wrk -t2 -c16`) append a 200-byte turn to one of 6,000 threads at
random, against Python's `sqlite3` with 16 threads, each committing one-row transactions
(`BEGIN IMMEDIATE; INSERT; COMMIT`) with exai's pragmas (WAL, `synchronous=FULL`) into a
file in the same directory. The two alternate in each round.

Usage: bench/sqlite_appends.py [path/to/exai] [seconds per run] [rounds]
Needs wrk. Everything runs on loopback in one temporary directory.
"""
import concurrent.futures
import http.client
import json
import os
import random
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dual_storage  # noqa: E402  (shares its argument handling, wrk runner and clean-up)
from dual_storage import EXAI, ROUNDS, SECONDS, WORK, free_port, run, start, wait_port  # noqa: E402

CLIENTS = 16
THREADS = 6000
CONTENT = "y" * 200


def create_threads(port):
    def create(_):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/threads", "{}", {"content-type": "application/json"})
        response = conn.getresponse()
        assert response.status == 201, response.status
        return json.loads(response.read())["id"]

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(create, range(THREADS)))


def raw_sqlite(path):
    """One-row transactions per second from CLIENTS threads, each on its own connection."""
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS turns (id INTEGER PRIMARY KEY, thread INTEGER NOT NULL, "
                  "content TEXT NOT NULL)")
    setup.close()
    deadline = time.monotonic() + SECONDS
    counts = [0] * CLIENTS

    def client(n):
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA synchronous=FULL")
        rng = random.Random(n)
        while time.monotonic() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO turns (thread, content) VALUES (?, ?)", (rng.randrange(THREADS), CONTENT))
            conn.execute("COMMIT")
            counts[n] += 1
        conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.monotonic() - started)


def main():
    port = free_port()
    data = WORK / "exai"
    env = {"PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{port}", "EXAI_DATA_DIR": str(data),
           "MAX_CONVERSATION_TURNS": "100000", "RUST_LOG": "warn"}
    start([EXAI], env=env)
    wait_port(port)
    ids = create_threads(port)
    script = WORK / "append.lua"
    script.write_text(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {json.dumps(json.dumps({"role": "user", "content": CONTENT}))}
local ids = {{{",".join(json.dumps(i) for i in ids)}}}
request = function()
  return wrk.format(nil, "/v1/threads/" .. ids[math.random(1, #ids)] .. "/turns")
end
""")
    dual_storage.CONNECTIONS = CLIENTS
    rounds = []
    for _ in range(ROUNDS):
        exai, p99 = dual_storage.wrk(f"http://127.0.0.1:{port}", str(script))
        rounds.append((exai, p99, raw_sqlite(WORK / "raw.db")))

    print(f"{CLIENTS} clients, {THREADS} threads, {len(CONTENT)}-byte turns, {SECONDS} s per run\n")
    print("| round | exai appends/s (p99 ms) | raw sqlite3 transactions/s | ratio |")
    print("|---|---|---|---|")
    for n, (exai, p99, raw) in enumerate(rounds, 1):
        print(f"| {n} | {exai:,.0f} ({p99:.2f}) | {raw:,.0f} | {exai / raw:.2f} |")


if __name__ == "__main__":
    run(main)
