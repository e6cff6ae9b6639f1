"""The local usage spool (SPEC §13, `usage.spool_path`): usage records the store could
not take wait in a file, one JSON row per line, until the store is back.

Several processes may share one spool (the workers of `server.workers`, a restarted
gateway), so every step holds an exclusive `flock` on the file:

- `append(rows)`: one write of whole lines (checked to be the file at `path`, not one a
  replay has just moved aside);
- `take()`: moves the file aside to `<path>.<pid>.<n>.replay` for this process to write to
  the store; `done(taken)` deletes it, and the rows that still failed are appended again.

A `.replay` file whose process died mid-replay is adopted by the next `take()`, so a
crash costs at most a duplicate of what was written just before it, never a loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("gateway.usage")

_COUNTER = itertools.count()


class UsageSpool:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self, flags: int) -> Iterator[int | None]:
        """The spool file at `path`, opened with `flags` and locked (None if absent)."""
        while True:
            try:
                fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:
                yield None
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield fd
                    return
            finally:
                os.close(fd)  # closing releases the lock
            # moved aside meanwhile by a replay: open the new file

    def append(self, rows: list[Any]) -> None:
        """Add rows (JSON-able sequences); durable when this returns. OSError on failure."""
        if not rows:
            return
        data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            assert fd is not None
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)

    def pending(self) -> bool:
        """Whether anything waits (cheap: a stat, and a directory scan only for leftovers
        of a process that died mid-replay)."""
        try:
            if self.path.stat().st_size > 0:
                return True
            return bool(self._orphans())
        except FileNotFoundError:
            return bool(self._orphans_or_none())
        except OSError:  # e.g. out of file descriptors: look again at the next flush
            return False

    def _orphans_or_none(self) -> list[Path]:
        try:
            return self._orphans()
        except OSError:
            return []

    def _orphans(self) -> list[Path]:
        found = []
        for candidate in self.path.parent.glob(self.path.name + ".*.replay"):
            pid = candidate.name[len(self.path.name) + 1 :].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                found.append(candidate)
        return found

    def take(self) -> list[tuple[Path, list[Any]]]:
        """Move what waits aside for this process; [(file, rows)] to write, then `done`."""
        taken: list[Path] = []
        for orphan in self._orphans():
            mine = self._aside()
            with contextlib.suppress(FileNotFoundError):
                orphan.rename(mine)  # atomic: one process adopts it
                taken.append(mine)
        with self._locked(os.O_RDWR) as fd:
            if fd is not None and os.fstat(fd).st_size > 0:
                mine = self._aside()
                self.path.rename(mine)
                taken.append(mine)
        return [(path, _read(path)) for path in taken]

    def done(self, taken: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            taken.unlink()

    def _aside(self) -> Path:
        return self.path.with_name(f"{self.path.name}.{os.getpid()}.{next(_COUNTER)}.replay")


def _read(path: Path) -> list[Any]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return rows
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:  # a torn last line (the disk filled up): skip it, say so
            log.warning("usage spool %s: line %d is not a record; skipped", path, number)
    return rows


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
