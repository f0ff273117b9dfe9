#!/usr/bin/env python3
"""New clients' latency while thousands of idle or slowloris connections are attempted.

Usage: bench/connections.py [path/to/exai] [attackers] [seconds]
Starts exai on the embedded store with its default connection settings (the header
timeout lowered to 10 s so that the attack is cut at least once per phase), then in
each phase measures new clients: 4 workers, each opening a fresh connection per
`GET /v1/threads/{id}` of one thread. Phases:

- quiet: nothing else is connected (the peer the others are compared with);
- idle: `attackers` connections that send nothing, each reopened as soon as the
  server closes it;
- slowloris: `attackers` connections that send a request line and then one header
  line every 2 s, never finishing, each reopened when closed.

For each phase it prints the clients' request count, p50, p99 and max latency and
failures, the attack connections open at the end, how many the server closed, and the
server's RSS.
"""
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
ATTACKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
WORKERS = 4
HEADER_TIMEOUT_SECS = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_exai(data_dir):
    port = free_port()
    env = dict(
        os.environ,
        EXAI_BIND=f"127.0.0.1:{port}",
        EXAI_DATA_DIR=data_dir,
        EXAI_HEADER_TIMEOUT_SECS=str(HEADER_TIMEOUT_SECS),
        RUST_LOG="warn",
    )
    proc = subprocess.Popen([EXAI], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.01)
    proc.kill()
    raise RuntimeError("exai did not start")


def create_thread(port):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/threads",
        data=json.dumps({"title": "bench"}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["id"]


async def one_request(port, path):
    """A fresh connection, one request, the whole answer: the latency in ms or None."""
    began = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: exai\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        if not answer.startswith(b"HTTP/1.1 200"):
            return None
    except (OSError, asyncio.TimeoutError):
        return None
    return (time.perf_counter() - began) * 1000


async def clients(port, path, until):
    latencies, failures = [], 0

    async def worker():
        nonlocal failures
        while time.perf_counter() < until:
            took = await one_request(port, path)
            if took is None:
                failures += 1
            else:
                latencies.append(took)

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return latencies, failures


class Attack:
    """`count` connections kept up: each reopened when the server closes it."""

    def __init__(self, port, count, slowloris):
        self.port, self.count, self.slowloris = port, count, slowloris
        self.open = 0
        self.closed_by_server = 0
        self.refused = 0
        self.stopping = False

    async def one(self, index):
        while not self.stopping:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.1)
                continue
            self.open += 1
            try:
                if self.slowloris:
                    writer.write(b"GET /livez HTTP/1.1\r\nHost: exai\r\n")
                    n = 0
                    while not self.stopping:
                        await writer.drain()
                        try:
                            # Returns early (b"") when the server closes the connection.
                            data = await asyncio.wait_for(reader.read(1024), 2)
                            if not data:
                                break
                        except asyncio.TimeoutError:
                            n += 1
                            writer.write(f"x-slow-{index}-{n}: a\r\n".encode())
                else:
                    while not self.stopping:
                        try:
                            if not await asyncio.wait_for(reader.read(1024), 1):
                                break
                        except asyncio.TimeoutError:
                            pass
                if not self.stopping:
                    self.closed_by_server += 1
            except OSError:
                if not self.stopping:
                    self.closed_by_server += 1
            finally:
                self.open -= 1
                writer.close()

    async def ramp_up(self):
        self.tasks = []
        for index in range(self.count):
            self.tasks.append(asyncio.create_task(self.one(index)))
            if index % 200 == 199:
                await asyncio.sleep(0.01)
        deadline = time.perf_counter() + 30
        while self.open < self.count * 0.95 and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)

    async def stop(self):
        self.stopping = True
        await asyncio.gather(*self.tasks, return_exceptions=True)


def summary(name, latencies, failures, attack, rss):
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99) - 1] if ordered else float("nan")
    line = (
        f"{name:10} requests {len(ordered):6}  p50 {statistics.median(ordered):7.2f} ms  "
        f"p99 {p99:7.2f} ms  max {ordered[-1]:8.2f} ms  failed {failures:4}  RSS {rss:6.1f} MiB"
    )
    if attack:
        line += (
            f"  attack open {attack.open} of {attack.count}, closed by server "
            f"{attack.closed_by_server}, refused {attack.refused}"
        )
    print(line, flush=True)
    return p99


async def main():
    with tempfile.TemporaryDirectory() as data_dir:
        proc, port = start_exai(data_dir)
        try:
            path = f"/v1/threads/{create_thread(port)}"
            await clients(port, path, time.perf_counter() + 2)  # warm-up
            results = {}
            for name, slowloris in [("quiet", None), ("idle", False), ("slowloris", True)]:
                attack = None
                if slowloris is not None:
                    attack = Attack(port, ATTACKERS, slowloris)
                    await attack.ramp_up()
                latencies, failures = await clients(port, path, time.perf_counter() + SECONDS)
                rss = rss_mib(proc.pid)
                results[name] = summary(name, latencies, failures, attack, rss)
                if attack:
                    await attack.stop()
                    await asyncio.sleep(1)
            for name in ("idle", "slowloris"):
                print(f"p99 {name} / quiet: {results[name] / results['quiet']:.2f}")
        finally:
            proc.terminate()
            proc.wait()


asyncio.run(main())
