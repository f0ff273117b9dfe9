#!/usr/bin/env python3
"""`exai import` and `exai export` on PostgreSQL, beside `psql` and `pg_dump` of the same tables.

Usage: bench/transfer.py [path/to/exai] [threads] [turns per thread]
Writes an export of THREADS threads with TURNS turns each (every turn at its own
instant, every other one with an idempotency key), imports it into a freshly migrated
database with `exai import`, exports it again with `exai export`, then dumps the same
three tables with `pg_dump --data-only` and loads the dump into another freshly migrated
database with `psql`; then imports and exports the same file on SQLite. Rows are
threads + turns; peak RSS from GNU time. Needs PostgreSQL (initdb, postgres, psql,
pg_dump) and /usr/bin/time.
"""
import json
import os
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dual_storage import WORK, psql, run, start_postgres  # noqa: E402

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
TURNS = int(sys.argv[3]) if len(sys.argv) > 3 else 10
TABLES = ["conversations", "messages", "tool_runs"]


def stamp(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_750_000_000 + seconds)) + ".000001Z"


def write_export(path):
    with open(path, "w") as out:
        header = {"kind": "header", "format": "exai-export", "version": 1, "backend": "sqlite",
                  "exported_at": stamp(0), "threads": THREADS, "turns": THREADS * TURNS, "runs": 0}
        out.write(json.dumps(header) + "\n")
        for n in range(THREADS):
            tid = str(uuid.UUID(int=n + 1))
            turns = [{"thread_id": tid, "seq": s, "role": "user" if s % 2 else "assistant",
                      "content": f"turn {s} of thread {n}: " + "lorem ipsum " * 8, "tool_name": None,
                      "files": [], "model_provider": None, "model_name": None, "metadata": {},
                      "created_at": stamp(n * 100 + s)} for s in range(1, TURNS + 1)]
            thread = {"id": tid, "parent_id": None, "title": f"thread {n}", "tool_name": "chat",
                      "metadata": {"n": n}, "created_at": stamp(n * 100),
                      "updated_at": turns[-1]["created_at"] if turns else stamp(n * 100),
                      "turn_count": TURNS, "version": TURNS}
            keys = {str(s): f"key-{n}-{s}" for s in range(1, TURNS + 1, 2)}
            out.write(json.dumps({"kind": "thread", "thread": thread, "turns": turns, "keys": keys}) + "\n")
        out.write(json.dumps({"kind": "end", "threads": THREADS, "turns": THREADS * TURNS, "runs": 0}) + "\n")


def timed(args, env=None, stdout=subprocess.DEVNULL):
    """Seconds and peak RSS (MiB) of a command."""
    began = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *args], env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr[-2000:]}")
    return elapsed, int(done.stderr.strip().splitlines()[-1]) / 1024


def migrated(bin_dir, port, name):
    url = f"postgres://postgres@127.0.0.1:{port}/"
    psql(bin_dir, url + "postgres", f"CREATE DATABASE {name}")
    env = dict(os.environ, DATABASE_URL=url + name, RUST_LOG="warn")
    subprocess.run([EXAI, "migrate"], env=env, check=True, capture_output=True)
    return url + name, env


def main():
    port, bin_dir = start_postgres()
    export_file, again_file, dump_file = WORK / "in.jsonl", WORK / "out.jsonl", WORK / "dump.sql"
    write_export(export_file)
    rows = THREADS * (TURNS + 1)

    _, exai_env = migrated(bin_dir, port, "exai_import")
    import_s, import_mib = timed([EXAI, "import", str(export_file)], exai_env)
    export_s, export_mib = timed([EXAI, "export", "--output", str(again_file)], exai_env)
    source = exai_env["DATABASE_URL"]

    tables = [arg for table in TABLES for arg in ("-t", table)]
    with open(dump_file, "w") as dump:
        dump_s, dump_mib = timed([bin_dir / "pg_dump", "--data-only", *tables, "-d", source], stdout=dump)
    # pg_dump empties search_path; the store's triggers call its functions unqualified.
    text = dump_file.read_text().replace("set_config('search_path', '', false)",
                                         "set_config('search_path', 'public', false)")
    dump_file.write_text(text)
    target, _ = migrated(bin_dir, port, "psql_load")
    load_s, load_mib = timed([bin_dir / "psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", dump_file])
    loaded = psql(bin_dir, target, "SELECT (SELECT count(*) FROM conversations) + (SELECT count(*) FROM messages)")
    assert int(loaded) == rows, (loaded, rows)

    sqlite_dir = WORK / "sqlite"
    sqlite_env = dict(os.environ, EXAI_DATA_DIR=str(sqlite_dir), RUST_LOG="warn")
    sqlite_import = timed([EXAI, "import", str(export_file)], sqlite_env)
    sqlite_export = timed([EXAI, "export", "--output", str(WORK / "sqlite.jsonl")], sqlite_env)

    print(f"{THREADS} threads, {THREADS * TURNS} turns ({rows} rows)\n")
    print("| store | step | exai s | exai rows/s | exai peak RSS MiB | peer | peer s | peer rows/s "
          "| peer peak RSS MiB | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for step, (s, mib), peer, (ps, pmib) in [("import", (import_s, import_mib), "psql -f dump", (load_s, load_mib)),
                                             ("export", (export_s, export_mib), "pg_dump", (dump_s, dump_mib))]:
        print(f"| postgres | {step} | {s:.1f} | {rows / s:.0f} | {mib:.0f} | {peer} | {ps:.1f} | {rows / ps:.0f} "
              f"| {pmib:.0f} | {ps / s:.2f} |")
    for step, (s, mib) in [("import", sqlite_import), ("export", sqlite_export)]:
        print(f"| sqlite | {step} | {s:.1f} | {rows / s:.0f} | {mib:.0f} | | | | | |")


if __name__ == "__main__":
    run(main)
