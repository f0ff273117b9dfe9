#!/usr/bin/env python3
"""Screenshots of the dashboard for the README: the overview and a thread page, at
1280x800 and 390x844, light and dark, into docs/screenshots/.

Usage: bench/screenshots.py [path/to/exai]
Starts the binary on a free port with a fresh SQLite store, adds a few threads (one with
a hostile title, shown as text), turns and echo runs, lets it take two stats samples,
then runs headless Chromium (Debian's `chromium`) once per picture.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/exai"
out_dir = "docs/screenshots"
SIZES = {"wide": "1280,800", "narrow": "390,844"}
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--hide-scrollbars"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    payload = json.dumps(body) if body is not None else None
    conn.request(method, path, payload, {"content-type": "application/json"})
    response = conn.getresponse()
    text = response.read()
    return response.status, (json.loads(text) if text else None)


def wait_until_live(port, proc):
    while True:
        if proc.poll() is not None:
            raise RuntimeError("exai exited during start-up")
        try:
            if call(port, "GET", "/livez")[0] == 200:
                return
        except OSError:
            time.sleep(0.05)


def seed(port):
    parent = call(port, "POST", "/v1/threads", {"title": "Plan the cache rollout", "tool_name": "planner",
                                                "metadata": {"project": "exai", "priority": 2}})[1]["id"]
    child = call(port, "POST", "/v1/threads", {
        "title": "Review <script>alert(1)</script> handling", "tool_name": "codereview",
        "parent_id": parent, "metadata": {"files_reviewed": 2, "labels": ["security", "ui"]}})[1]["id"]
    turns = [
        {"role": "user", "content": "Check how titles like <script>alert(1)</script> are shown.",
         "files": ["src/http/dashboard/threads.rs"]},
        {"role": "assistant", "content": "They are escaped by the template and shown as text.",
         "model_provider": "openai", "model_name": "o3", "tool_name": "codereview"},
    ]
    for turn in turns:
        call(port, "POST", f"/v1/threads/{child}/turns", turn)
    call(port, "POST", "/v1/threads", {"title": "Fix what the review found", "tool_name": "chat",
                                       "parent_id": child})
    for n in range(8):
        call(port, "POST", "/v1/threads", {"title": f"Conversation {n + 1}", "tool_name": "chat"})
    for n in range(3):
        call(port, "POST", "/v1/tools/echo/runs", {"input": f"echo {n}", "continuation_id": parent})
    for _ in range(30):
        call(port, "GET", f"/v1/threads/{child}")
    return child


def shoot(url, name, size, dark):
    with tempfile.TemporaryDirectory() as profile:
        flags = [f"--user-data-dir={profile}", f"--window-size={size}",
                 f"--screenshot={out_dir}/{name}.png"]
        if dark:
            flags.append("--force-dark-mode")
        subprocess.run(CHROMIUM + flags + [url], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


os.makedirs(out_dir, exist_ok=True)
with tempfile.TemporaryDirectory() as data_dir:
    port = free_port()
    env = dict(os.environ, EXAI_BIND=f"127.0.0.1:{port}", EXAI_DATA_DIR=data_dir, RUST_LOG="warn")
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_live(port, proc)
        thread = seed(port)
        call(port, "GET", "/healthz")
        time.sleep(21)  # two stats samples, so the charts have a line
        for page, path in [("overview", "/dashboard"), ("thread", f"/dashboard/threads/{thread}")]:
            for size_name, size in SIZES.items():
                for scheme in ["light", "dark"]:
                    shoot(f"http://127.0.0.1:{port}{path}", f"{page}-{size_name}-{scheme}", size,
                          scheme == "dark")
    finally:
        proc.terminate()
        proc.wait()
print("\n".join(sorted(os.listdir(out_dir))))
