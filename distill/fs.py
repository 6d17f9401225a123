"""Disks as users meet them: full, read-only, not ours; and the temporary files a killed run leaves.

Every stage writes its outputs to `NAME.PID.tmp` (or `.NAME.PID.tmp`) and renames them at the end, so
an interrupted run leaves the previous outputs as they were. A run killed with -9, or stopped by a full
disk before it could clean up, leaves those temporary files behind: `sweep_temps` removes the ones whose
process is gone, at the next start. `disk_error` finds the disk's own error in an exception chain, so
the command line can say it in one line (`distill.cli.main`) instead of two chained tracebacks.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from pathlib import Path

_DISK = {
    errno.ENOSPC: ("no space left on device", "free space (or give --out on another disk) and rerun the same "
                   "command: what was written before is kept"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota and rerun the same command"),
    errno.EROFS: ("read-only file system", "give an --out on a writable file system"),
    errno.EACCES: ("permission denied", "give an --out this user can write, or fix the directory's permissions"),
    errno.EPERM: ("operation not permitted", "give an --out this user can write"),
}
_TMP = re.compile(r"\.(\d+)\.tmp$")


def disk_error(e: BaseException | None) -> OSError | sqlite3.OperationalError | None:
    """The first error of a full, read-only or forbidden disk in `e`'s chain (causes and contexts), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK:
            return e
        if isinstance(e, sqlite3.OperationalError) and any(
                m in str(e) for m in ("disk is full", "readonly database", "disk I/O error")):
            return e
        e = e.__cause__ or e.__context__
    return None


def describe(e: OSError | sqlite3.OperationalError) -> str:
    """One line: the file, what the disk said, and the fix."""
    if isinstance(e, sqlite3.OperationalError):
        what = "no space left on device" if "full" in str(e) else "read-only" if "readonly" in str(e) else str(e)
        fix = _DISK[errno.ENOSPC][1] if "full" in str(e) else _DISK[errno.EROFS][1]
        return f"a state database: {what}; {fix}"
    what, fix = _DISK[e.errno]
    where = e.filename or "a file"
    if e.errno == errno.EACCES and e.filename and _read_only(Path(e.filename)):
        what, fix = _DISK[errno.EROFS]  # an unwritable directory says so: read-only, not a missing file
        what = "read-only (not writable by this user)"
    return f"{where}: {what}; {fix}"


def _read_only(p: Path) -> bool:
    d = p if p.is_dir() else p.parent
    while not d.exists() and d != d.parent:
        d = d.parent
    return not os.access(d, os.W_OK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temps(directory: str | Path) -> list[Path]:
    """Remove `*.PID.tmp` files in `directory` whose process is gone (a killed run's); return them."""
    d = Path(directory)
    removed = []
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        m = _TMP.search(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `path` through a temporary file and a rename: an interrupted write leaves the old file whole."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
