"""Faults as users meet them (issue 32): a full disk, a read-only disk, a directory this user cannot write,
and what a killed run leaves behind. Each command must end in one line with the file and the fix (exit 2),
lose nothing already written, and leave no temporary files.

The full and read-only disks are real: a size-capped or read-only tmpfs mounted in a user namespace of
this test's own (`unshare --user --map-root-user --mount`), so they need no privileges on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _can_mount() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                        "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return r.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="no user namespaces to mount a test tmpfs in")


def _samples(path: Path, n: int) -> Path:
    rows = [{"id": f"p{i}", "problem": f"What is {i % 9} + 1?", "answer": str(i % 9 + 1),
             "completion": f"<think>\n{i % 9} + 1 = {i % 9 + 1}. " + "Checking the sum once more. " * 8
                           + f"\n</think>\n\n\\boxed{{{i % 9 + 1}}}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _in_mount(mnt: Path, opts: str, command: str) -> subprocess.CompletedProcess:
    """`command` (sh) with a fresh tmpfs of `opts` on `mnt`, in a user and mount namespace of its own."""
    mnt.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o {opts} tmpfs {mnt} && {command}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    err = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and all(w in err[0] for w in words), r.stderr[-3000:]


@needs_mount
@pytest.mark.parametrize("size", ["256k", "3m"])  # full while saving verdicts; full while writing the outputs
def test_a_full_disk_while_filtering_is_one_line_and_leaves_no_temporary_file(tmp_path, size):
    inp = _samples(tmp_path / "in.jsonl", 2000)
    mnt = tmp_path / "small"
    py = sys.executable
    r = _in_mount(mnt, f"size={size}", f"{py} -m distill filter --in {inp} --out {mnt}/f --no-progress "
                                    f"--set filter.dedup.enabled=false; rc=$?; ls -A {mnt}/f; exit $rc")
    _one_line_error(r, "full")
    left = r.stdout.split()
    assert not [x for x in left if x.endswith(".tmp")], left  # no temporary files left behind


@needs_mount
def test_read_only_outputs_say_read_only(tmp_path):
    inp = _samples(tmp_path / "in.jsonl", 5)
    mnt = tmp_path / "ro"
    py = sys.executable
    for cmd in (f"{py} -m distill filter --in {inp} --out {mnt}/sub --no-progress",
                f"{py} -m distill store merge {inp} --out {mnt}/store",
                f"{py} -m distill generate --recipe recipes/quickstart.yaml --out {mnt}/store"):
        r = _in_mount(mnt, "ro", cmd)
        _one_line_error(r, "read-only")


def test_a_killed_runs_temporary_files_are_removed_at_the_next_start(tmp_path):
    from distill.config import ExportConfig, FilterConfig
    from distill.filter import filter_samples

    inp = _samples(tmp_path / "in.jsonl", 3)
    out = tmp_path / "f"
    out.mkdir()
    dead = 2 ** 22 + 12345  # above pid_max's default: no process has it
    stale = [out / f".kept.jsonl.{dead}.tmp", out / f"report.md.{dead}.tmp"]
    for p in stale:
        p.write_text("half")
    mine = out / f".kept.jsonl.{os.getpid()}.tmp.keep"  # not a temporary file of the pattern: untouched
    mine.write_text("x")
    filter_samples(inp, out, FilterConfig.model_validate({"dedup": {"enabled": False}}), ExportConfig(), progress=False)
    assert not any(p.exists() for p in stale) and mine.exists()


def test_an_unwritable_directory_as_an_ordinary_user_says_read_only(tmp_path):
    """As uid 65534, `--out` under a directory of root's. Where this environment is readable by other users
    the whole command runs; where it is not (an interpreter under a private home), the system Python runs
    the same disk reading (`distill.fs`, standard library only) on the same real error."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to become another user")
    import tempfile

    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    d = Path(tempfile.mkdtemp(prefix="distill-ro-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)  # root's: others may read, not write
        inp = _samples(d / "in.jsonl", 3)
        os.chmod(inp, 0o644)
        env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), "HOME": "/tmp"}
        probe = subprocess.run([*user, sys.executable, "-c", "import distill.cli"], cwd="/", capture_output=True, env=env)
        if probe.returncode == 0:
            r = subprocess.run([*user, sys.executable, "-m", "distill", "filter", "--in", str(inp), "--out",
                                str(d / "sub"), "--no-progress"], cwd="/", capture_output=True, text=True, timeout=300,
                               env=env)
            _one_line_error(r, "not writable by this user")
            return
        pkg = d / "pkg" / "distill"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        shutil.copy(ROOT / "distill" / "fs.py", pkg / "fs.py")
        for p in (d / "pkg").rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (d / "pkg").chmod(0o755)
        script = ("import sys\nsys.path.insert(0, sys.argv[1])\nfrom distill.fs import describe, disk_error, sweep_temps\n"
                  "from pathlib import Path\ntry:\n    Path(sys.argv[2]).mkdir(parents=True)\nexcept OSError as e:\n"
                  "    print(describe(disk_error(e)))\n")
        python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or "python3"
        r = subprocess.run([*user, python, "-c", script, str(d / "pkg"), str(d / "sub" / "f")], cwd="/",
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "read-only (not writable by this user)" in r.stdout, (r.stdout, r.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)
