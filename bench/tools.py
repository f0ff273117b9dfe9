#!/usr/bin/env python3
"""Timeout precision and cancellation latency of tool runs, against an upstream that
accepts connections and never answers.

Usage: bench/tools.py [path/to/exai] [runs]
For each run: how long after its 2 s deadline the caller got 504 and the upstream saw its
connection closed; for cancellations: how long after `POST /cancel` was sent the upstream
saw its connection closed, and when the cancel request was answered.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dual_storage import free_port, wait_port  # noqa: E402

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10


class Hanging:
    """Reads requests, never answers, and notes when each connection closes."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.accepted, self.closed = [], []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.listener.accept()
            self.accepted.append(time.perf_counter())
            threading.Thread(target=self.hold, args=(conn,), daemon=True).start()

    def hold(self, conn):
        while conn.recv(4096):
            pass
        self.closed.append(time.perf_counter())


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, json.dumps(body) if body is not None else None, {"content-type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def wait_for(condition):
    deadline = time.perf_counter() + 10
    while not condition():
        if time.perf_counter() > deadline:
            raise RuntimeError("timed out waiting")
        time.sleep(0.0005)


def main():
    upstream = Hanging()
    work = tempfile.mkdtemp(prefix="exai-bench-tools-")
    registry = os.path.join(work, "tools.toml")
    with open(registry, "w") as f:
        f.write(f'[[tools]]\nname = "stall"\nkind = "http"\nurl = "http://127.0.0.1:{upstream.port}/"\n'
                'timeout_secs = 2\nmax_concurrency = 50\n')
    port = free_port()
    server = subprocess.Popen([EXAI], env={"PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{port}",
                                           "EXAI_DATA_DIR": work, "EXAI_TOOLS_FILE": registry, "RUST_LOG": "warn"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        answered, closed = [], []
        for _ in range(RUNS):
            seen = len(upstream.closed)
            began = time.perf_counter()
            status, _ = call(port, "POST", "/v1/tools/stall/runs", {"input": "hello?"})
            assert status == 504, status
            answered.append((time.perf_counter() - began - 2) * 1000)
            wait_for(lambda: len(upstream.closed) > seen)
            closed.append((upstream.closed[seen] - began - 2) * 1000)
        print(f"timeout 2 s, {RUNS} runs: 504 after the deadline by median {statistics.median(answered):.1f} ms "
              f"(max {max(answered):.1f}); upstream connection closed after the deadline by median "
              f"{statistics.median(closed):.1f} ms (max {max(closed):.1f})")

        to_close, to_answer = [], []
        for _ in range(RUNS):
            accepted, seen = len(upstream.accepted), len(upstream.closed)
            status, run = call(port, "POST", "/v1/tools/stall/runs", {"input": "hello?", "wait": False})
            assert status == 202, status
            wait_for(lambda: len(upstream.accepted) > accepted)
            began = time.perf_counter()
            status, cancelled = call(port, "POST", f"/v1/runs/{run['id']}/cancel", {})
            to_answer.append((time.perf_counter() - began) * 1000)
            assert status == 200 and cancelled["status"] == "cancelled", cancelled
            wait_for(lambda: len(upstream.closed) > seen)
            to_close.append((upstream.closed[seen] - began) * 1000)
        print(f"cancel, {RUNS} runs: upstream connection closed after the cancel was sent by median "
              f"{statistics.median(to_close):.1f} ms (max {max(to_close):.1f}); cancel answered (run recorded) "
              f"in median {statistics.median(to_answer):.1f} ms (max {max(to_answer):.1f})")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
