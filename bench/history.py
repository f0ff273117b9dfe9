#!/usr/bin/env python3
"""Memory of the worst-case history: every limit at its maximum.

A chain of 21 threads (the requested one and the 20 ancestors history follows), each
holding MAX_CONVERSATION_TURNS (20) turns with 1 MiB of content, 16 KiB of metadata and
64 file references of 4 KiB — about 550 MB in the store. Then `GET …/history` of the
last thread, once and then 4 at once, and the server's peak RSS above its idle RSS.

Usage: bench/history.py [path/to/exai] [sqlite|postgres ...]
Needs PostgreSQL (initdb, postgres) for the postgres run. The chain is written, then a
fresh exai process serves the reads: idle RSS is read before its first request, and the
peak is the kernel's VmHWM (reset through /proc/<pid>/clear_refs before each round, so
each round's peak includes whatever earlier rounds left resident).
"""
import concurrent.futures
import http.client
import json
import os
import random
import subprocess
import sys
import time

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
BACKENDS = sys.argv[2:] or ["sqlite", "postgres"]
del sys.argv[2:]  # dual_storage reads its own arguments from there when imported

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dual_storage  # noqa: E402
from dual_storage import WORK, free_port, run, start, start_postgres, wait_port  # noqa: E402
# HISTORY_AT_ONCE=1 spares the machine when measuring a build without the budget.
AT_ONCE = [int(n) for n in os.environ.get("HISTORY_AT_ONCE", "1,4").split(",")]
LINKS, TURNS = 21, 20
CONTENT_BYTES, METADATA_BYTES, FILES, FILE_BYTES = 1024 * 1024, 16 * 1024, 64, 4096


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request(method, path, json.dumps(body) if body is not None else None, {"content-type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    assert response.status < 300, (response.status, data[:300])
    return data


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def turn(rng, n):
    # Random hex, so that no store compresses it away; the metadata's serialized size
    # stays just under its limit.
    return {
        "role": "user" if n % 2 == 0 else "assistant",
        "content": rng.randbytes(CONTENT_BYTES // 2).hex(),
        "metadata": {"pad": "m" * (METADATA_BYTES - 20)},
        "files": [f"{i:04d}" + "f" * (FILE_BYTES - 4) for i in range(FILES)],
    }


def fill_chain(port):
    rng = random.Random(1)
    parent = None
    for link in range(LINKS):
        body = {"title": f"link {link}"} | ({"parent_id": parent} if parent else {})
        parent = json.loads(call(port, "POST", "/v1/threads", body))["id"]
        for n in range(TURNS):
            call(port, "POST", f"/v1/threads/{parent}/turns", turn(rng, n))
    return parent


def peak_above_idle(pid, idle_kib, requests):
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        sizes = list(pool.map(lambda request: len(request()), requests))
    took = time.perf_counter() - began
    return (status_kib(pid, "VmHWM") - idle_kib) / 1024, sizes, took


def measure(backend):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "EXAI_BIND": f"127.0.0.1:{port}", "RUST_LOG": "warn"}
    if backend == "postgres":
        pg_port, _ = start_postgres()
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{pg_port}/postgres"
        subprocess.run([EXAI, "migrate"], env=env, check=True, capture_output=True)
    else:
        data = WORK / "sqlite"
        data.mkdir()
        env["EXAI_DATA_DIR"] = str(data)
    server = start([EXAI], env=env)
    wait_port(port)
    began = time.perf_counter()
    last = fill_chain(port)
    filled = time.perf_counter() - began
    # A fresh process on the filled store: the writes' memory (and the cache they filled)
    # would otherwise be reused by the reads and hide what they cost.
    stop(server)
    server = start([EXAI], env=env)
    wait_port(port)
    history = lambda: call(port, "GET", f"/v1/threads/{last}/history")  # noqa: E731
    time.sleep(1)
    idle = status_kib(server.pid, "VmRSS")
    print(f"{backend}: chain of {LINKS} threads x {TURNS} turns written in {filled:.0f} s; "
          f"idle RSS {idle / 1024:.1f} MiB")
    for concurrent_requests in AT_ONCE:
        peaks, times = [], []
        for _ in range(3):
            peak, sizes, took = peak_above_idle(server.pid, idle, [history] * concurrent_requests)
            peaks.append(peak)
            times.append(took)
        print(f"  {concurrent_requests} at once: response {sizes[0] / 1e6:.2f} MB each; peak RSS above idle "
              f"{max(peaks):.1f} MiB (max of 3 rounds: {', '.join(f'{p:.1f}' for p in peaks)}); "
              f"{min(times) * 1000:.0f} ms for the batch (best of 3)")
    document = json.loads(history())
    print(f"  a history returns {len(document['turns'])} of {document['total_turns']} turns "
          f"(omitted {document.get('omitted_turns')}, truncated {document.get('truncated')})")
    stop(server)


def stop(server):
    server.kill()
    server.wait()
    dual_storage.children.remove(server)


def main():
    for backend in BACKENDS:
        measure(backend)


if __name__ == "__main__":
    run(main)
