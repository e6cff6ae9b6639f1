"""The usage spool file (gateway/pipeline/spool.py): appends are whole lines, a take
moves the file aside atomically, and a replay left by a dead process is adopted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.pipeline.spool import UsageSpool

ROW = ["key_a", 1.5, "GET", "/x", 200, 1.25, None]


def test_append_take_done(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "sub" / "usage.spool")
    assert not spool.pending() and spool.take() == []
    spool.append([ROW, ROW])
    spool.append([ROW])
    assert spool.pending()
    [(taken, rows)] = spool.take()
    assert rows == [ROW] * 3
    assert not spool.pending()  # our own replay is not an orphan
    spool.append([ROW])  # a new file while the old one replays
    spool.done(taken)
    assert not taken.exists()
    [(_, rows)] = spool.take()
    assert rows == [ROW]


def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "usage.spool")
    spool.append([ROW])
    with open(spool.path, "a") as file:
        file.write('["key_b", 2.0, "GE')
    [(_, rows)] = spool.take()
    assert rows == [ROW]


def test_the_replay_of_a_dead_process_is_adopted(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "usage.spool")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from gateway.pipeline.spool import UsageSpool as S; "
            "s = S(sys.argv[1]); s.append([['key_c', 1.0, 'GET', '/', 200, 1.0, None]]); "
            "s.take()",  # moved aside, never written: the process dies mid-replay
            str(spool.path),
        ],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert child.returncode == 0
    assert list(tmp_path.glob("usage.spool.*.replay"))
    assert spool.pending()
    [(_, rows)] = spool.take()
    assert rows == [["key_c", 1.0, "GET", "/", 200, 1.0, None]]
