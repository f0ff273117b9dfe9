#!/usr/bin/env python3
"""What the triggers that let EX-AI write the adopted tables cost exai's own appends.

exai_append_turns on Postgres, through pgbench (8 clients, 10 s a round), with the message
triggers of migration 0009 enabled and disabled in alternating rounds. Every round appends
one turn at a time to 2,000 threads of its own, created empty, so the rounds compare alike.

Usage: bench/shared_tables.py [path/to/exai] [rounds]
Needs PostgreSQL (initdb, postgres, psql, pgbench).
"""
import os
import subprocess
import sys

EXAI = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/exai")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
del sys.argv[1:]  # dual_storage reads its own arguments from there when imported

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dual_storage import WORK, run, start_postgres  # noqa: E402

THREADS = 2000
TRIGGERS = ("exai_complete_message", "exai_count_message")


def main():
    port, bin_dir = start_postgres()
    connect = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]

    def psql(sql, database="bench"):
        subprocess.run([bin_dir / "psql", *connect, "-d", database, "-q", "-o", os.devnull, "-c", sql], check=True)

    psql("CREATE DATABASE bench", database="postgres")
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/bench", RUST_LOG="warn")
    subprocess.run([EXAI, "migrate"], env=env, check=True)
    thread = "('00000000-0000-4000-8000-' || lpad(({n})::text, 12, '0'))::uuid"
    psql(f"SELECT count(exai_create_thread({thread.format(n='n')}, NULL, NULL, NULL, '{{}}', now())) "
         f"FROM generate_series(1, {THREADS * ROUNDS}) n")
    print("| round | triggers | appends/s |")
    print("|---|---|---|")
    for round_ in range(ROUNDS):
        enabled = round_ % 2 == 0
        action = "ENABLE" if enabled else "DISABLE"
        psql("; ".join(f"ALTER TABLE messages {action} TRIGGER {t}" for t in TRIGGERS))
        script = WORK / f"round{round_}.sql"
        script.write_text(
            f"\\set n random(1, {THREADS})\n"
            f"SELECT exai_append_turns({thread.format(n=f':n + {round_ * THREADS}')}, "
            "'[{\"role\": \"user\", \"content\": \"hello\"}]', NULL, 1000000, 86400000, now(), 2);\n")
        out = subprocess.run([bin_dir / "pgbench", *connect, "-n", "-c", "8", "-j", "2", "-T", "10",
                              "-f", script, "bench"], capture_output=True, text=True, check=True).stdout
        tps = next(line for line in out.splitlines() if line.startswith("tps"))
        print(f"| {round_ + 1} | {'on' if enabled else 'off'} | {float(tps.split()[2]):.0f} |")


if __name__ == "__main__":
    run(main)
