#!/usr/bin/env python3
"""Start-up to the first `/livez` 200 and idle RSS of `exai serve` on the embedded store.

Usage: bench/startup.py [path/to/exai] [runs]
Each run starts the binary on a free port: the first on an empty data directory
(creating the SQLite file), the rest on that existing file. After the last run the
server idles for two seconds before its resident set size is read from /proc.
"""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/exai"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/livez")
        return conn.getresponse().status == 200
    except OSError:
        return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start(data_dir):
    port = free_port()
    env = dict(os.environ, EXAI_BIND=f"127.0.0.1:{port}", EXAI_DATA_DIR=data_dir, RUST_LOG="warn")
    began = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not live(port):
        if proc.poll() is not None:
            raise RuntimeError("exai exited during start-up")
        time.sleep(0.0005)
    return proc, (time.perf_counter() - began) * 1000


with tempfile.TemporaryDirectory() as data_dir:
    proc, first_ms = start(data_dir)
    proc.terminate()
    proc.wait()
    times = []
    for _ in range(runs):
        proc, ms = start(data_dir)
        times.append(ms)
        proc.terminate()
        proc.wait()
    proc, _ = start(data_dir)
    time.sleep(2)
    rss = rss_kib(proc.pid)
    proc.terminate()
    proc.wait()

times.sort()
print(f"first start (creates the database): {first_ms:.1f} ms")
print(f"start-up to first /livez 200 over {runs} runs: median {statistics.median(times):.1f} ms, "
      f"max {times[-1]:.1f} ms")
print(f"idle RSS: {rss / 1024:.1f} MiB")
