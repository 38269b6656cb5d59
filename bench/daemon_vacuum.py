#!/usr/bin/env python3
"""The database side of bench/daemon.sh (docs/benchmarks.md): VACUUM pom.db under a running
daemon, and optionally fill it with history first.

Usage:
    daemon_vacuum.py vacuum DB SECONDS [PAUSE]
    daemon_vacuum.py prefill DB ROWS CHECKS

vacuum: while `pom run` writes its observations to DB, runs `VACUUM` on the same file from this
process, waits PAUSE seconds (default 0) and starts again, until SECONDS have passed (a VACUUM
under way is finished, not cut short). A VACUUM takes the database's write lock for its whole
run and rewrites every page, so the daemon's writes wait behind it; the point is to show that the
probes' start times do not. A VACUUM that fails (for instance "database is locked" after the
10 s busy timeout, when the daemon holds the lock) is counted and the loop goes on. On stdout,
one line of key=value pairs:

    vacuums=N failed=N busy_s=S max_s=S db_bytes=N

busy_s is the time spent inside VACUUM statements (the lock held or waited for), max_s the
longest one, db_bytes the database's size at the end. The first error message, if any, goes to
stderr.

prefill: inserts ROWS observations of CHECKS health checks (named d0001/health... as
bench/daemon.sh names them), spread evenly over the past 29 days so that the daemon's 30-day
prune keeps them, in transactions of 100,000 rows. This makes a VACUUM last as long as it would
on a database with that much history. The daemon must already have created the schema. Prints
rows=N seconds=S db_bytes=N.
"""

import os
import sqlite3
import sys
import time

USAGE = "\n".join(__doc__.splitlines()[3:6])


def connect(db: str) -> sqlite3.Connection:
    # isolation_level=None: autocommit, since VACUUM cannot run inside a transaction.
    return sqlite3.connect(db, timeout=10.0, isolation_level=None)


def vacuum(db: str, seconds: float, pause: float) -> None:
    conn = connect(db)
    vacuums = failed = 0
    busy = longest = 0.0
    first_error = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            conn.execute("VACUUM")
            vacuums += 1
        except sqlite3.Error as e:
            failed += 1
            first_error = first_error or str(e)
        took = time.monotonic() - start
        busy += took
        longest = max(longest, took)
        if pause > 0:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    conn.close()
    if first_error:
        print(f"first VACUUM error: {first_error}", file=sys.stderr)
    print(
        f"vacuums={vacuums} failed={failed} busy_s={busy:.3f} max_s={longest:.3f} "
        f"db_bytes={os.path.getsize(db)}"
    )


def prefill(db: str, rows: int, checks: int) -> None:
    conn = connect(db)
    span = 29 * 86_400_000
    first = int(time.time() * 1000) - span
    chunk = 100_000
    start = time.monotonic()
    for lo in range(0, rows, chunk):
        hi = min(lo + chunk, rows)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
            INSERT INTO observations (check_id, agent, status, latency_ms, detail, at_ms)
            SELECT printf('d%04d/health', i % ? + 1), 'bench', 'operational', 1,
                   'GET /health returned 200 OK', ? + i * ? / ?
            FROM n
            """,
            (lo, hi, checks, first, span, rows),
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"rows={rows} seconds={time.monotonic() - start:.1f} db_bytes={os.path.getsize(db)}")


def main() -> int:
    args = sys.argv[1:]
    if len(args) in (3, 4) and args[0] == "vacuum":
        vacuum(args[1], float(args[2]), float(args[3]) if len(args) == 4 else 0.0)
    elif len(args) == 4 and args[0] == "prefill":
        prefill(args[1], int(args[2]), int(args[3]))
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
