"""Running model-written code: a real sandbox, limits per run, and a judge out of the answer's reach.

Untrusted code runs under bubblewrap (`bwrap`, Flatpak's sandbox, in Debian as `bubblewrap`):

- **Its own user namespace.** bwrap creates a user namespace for every run (as root, `setpriv` first
  drops to a fresh unprivileged uid), and the process limit is set *inside* it, after it exists. The
  kernel counts RLIMIT_NPROC per (user namespace, uid), so the count is the run's own processes: the
  other threads of the same user on the host (a trainer's torch threads, a desktop session) do not
  use it up. Setting the limit before bwrap starts (as distill once did) counts every task of the uid.
- **Only what the program needs.** `/usr` (the interpreter, its standard library, the Python packages
  installed system-wide) and the loader's cache, read-only; a private `/proc` and minimal `/dev`
  (read-only); a private `/tmp` of `tmp_mb` (a size-capped tmpfs) holding the working directory and
  an empty home. Nothing else of the host: not `/home`, `/root`, `/etc`, the project or its data.
- **No network, own PID/IPC/UTS namespaces** (`--unshare-all`), `--die-with-parent`, `--new-session`,
  a cleared environment, no further user namespaces (`--disable-userns`).
- **Limits per run, not per process.** rlimits bound each process (address space, CPU, file size,
  open files); a monitor here samples the run's whole process tree (resident memory, CPU seconds
  including reaped children, process count) and kills the process group at the run's limit, so four
  forked children cannot hold four times `memory_mb`. The `/tmp` cap counts in the run's budget:
  `parallel_runs` sizes the pool by `memory_mb + tmp_mb`.

`stdio` problems run the program alone, as judges do: stdin is a regular file (a memfd, so
`os.fstat(0).st_size` is the input's size), and the whole stdout (up to `file_mb`) is compared here.

Without bwrap, `run` refuses with how to install it; `allow_unsandboxed=True` (the
`--unsafe-no-sandbox` flag) runs the same processes without the sandbox, for users who already run
distill inside a container of their own. The per-process rlimits (but the process count) and the
tree monitor still apply then.

This module knows nothing of tests: distill/verify/judge.py runs them through it.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field


class SandboxError(RuntimeError):
    """No sandbox to run model-written code in; the message says how to install one."""


@dataclass
class Limits:
    """The limits of one run: the one set of defaults. The recipe's `code` sections (the filter's and
    eval's `filter.correct.code`, the GRPO and on-policy `code` reward) are `distill.config.ExecConfig`,
    whose defaults are these, so a program is held to the same limits wherever it is judged."""

    cpu_seconds: int = 10  # CPU seconds of the run's whole process tree; a problem's `time_limit` replaces it
    wall_seconds: float = 20.0  # the whole process group is killed at this
    memory_mb: int = 2048  # resident memory of the run's whole process tree (and each process's address space)
    processes: int = 64  # processes and threads of the run
    file_mb: int = 16  # largest file the program may write, and the most stdout compared
    tmp_mb: int = 64  # the private /tmp (working directory, home), counted in the run's memory
    open_files: int = 64
    output_bytes: int = 65536  # stdout/stderr kept in the verdict (not what is compared)


@dataclass
class Outcome:
    status: str  # passed | failed | timeout | runtime_error | exited_early | output_limit | memory_limit | killed | ...
    exit_code: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3")
SANDBOX_DIR = "/tmp/work"  # the working directory and home, inside the sandbox's own capped /tmp


def _python() -> str:
    for p in PYTHON_CANDIDATES:
        if os.path.exists(p):
            return p
    return "python3"


_USERNS_FIX = ("enable unprivileged user namespaces: `sysctl kernel.unprivileged_userns_clone=1` (Debian), "
               "`sysctl user.max_user_namespaces=15000` where it is 0, or on Ubuntu 24.04+ "
               "`sysctl kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile for bwrap); "
               "inside a container of your own, --unsafe-no-sandbox runs model-written code without the sandbox")


@functools.lru_cache(maxsize=1)
def sandbox_available() -> tuple[bool, str]:
    """(usable, why not). Runs a real program under the same limits as every run (a bwrap binary can
    exist on a machine whose kernel forbids the namespaces it needs, and a limit set in the wrong
    place fails only under load), and checks that it sees its own /tmp and not the host's home."""
    bwrap = shutil.which("bwrap")
    setpriv = shutil.which("setpriv") if os.geteuid() == 0 else "not needed"
    if not bwrap or not setpriv:
        missing = " and ".join(x for x, p in (("bwrap", bwrap), ("setpriv", setpriv)) if not p)
        return False, (f"{missing} not found. Install the sandbox: `apt-get install bubblewrap` (Debian/Ubuntu; "
                       "setpriv is in util-linux), `dnf install bubblewrap` (Fedora/RHEL). Inside a container of your "
                       "own, --unsafe-no-sandbox runs model-written code without it")
    home = os.path.expanduser("~")
    if home in ("", "/") or home.startswith(("/usr", "/tmp")):  # a service account's home: nothing to hide
        home = "/nonexistent-home"
    probe = ("import os, sys\nprint(os.getcwd())\n"
             f"sys.stdout.write('home-visible' if os.path.exists({home!r}) else 'ok')\n")
    try:
        o = _run_main(probe, "", Limits(cpu_seconds=5, wall_seconds=20), sandbox=True)
    except OSError as e:
        return False, f"bwrap did not start ({e})"
    if o.status != "passed" or not o.stdout.endswith("ok") or SANDBOX_DIR not in o.stdout:
        err = (o.stderr.strip() or o.detail or o.stdout)[-300:]
        if "home-visible" in o.stdout:
            return False, "the sandbox shows the host's home directory; this bwrap does not isolate the filesystem"
        return False, f"bwrap cannot run a program here ({o.status}: {err}); {_USERNS_FIX}"
    return True, ""


def available_mb() -> int | None:
    """Memory available now (MemAvailable), in MB; None where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def parallel_runs(workers: int, memory_mb: int, tmp_mb: int = Limits.tmp_mb) -> int:
    """How many sandboxed runs to have at once: `workers` (one per core by default), fewer when the
    memory available now cannot hold that many runs at their whole budget (the process tree's
    `memory_mb` plus the `/tmp` it may fill)."""
    avail = available_mb()
    if avail is None:
        return workers
    return max(1, min(workers, avail // max(1, memory_mb + tmp_mb)))


# Numerical libraries start one thread per core by default; executions already run one per core.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_ONE_THREAD_ARGS = [x for k, v in _ONE_THREAD.items() for x in ("--setenv", k, v)]


def _fs_args() -> list[str]:
    """What of the host the program sees: /usr read-only (with the merged-/usr links), the loader's files."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives"):
        args += ["--ro-bind-try", f, f]
    return args


def _sandbox_argv(limits: Limits) -> list[str]:
    # As root, a fresh unprivileged uid per run: root inside would not be held to RLIMIT_NPROC.
    uid = 200000 + secrets.randbelow(1 << 20)
    user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if os.geteuid() == 0 else []
    return [*user, "bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", *_fs_args(), "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
            "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp", "--dir", SANDBOX_DIR, "--chdir", SANDBOX_DIR,
            "--remount-ro", "/", "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
            "--setenv", "HOME", SANDBOX_DIR, "--setenv", "LANG", "C.UTF-8", *_ONE_THREAD_ARGS]


def _limits_arg(limits: Limits, sandbox: bool) -> str:
    """The limits the bootstraps set: process count (only inside the sandbox's user namespace: outside
    it the kernel would count every task of this uid), CPU seconds, address space MB, file MB, open files."""
    nproc = limits.processes if sandbox else -1
    return f"{nproc},{limits.cpu_seconds},{limits.memory_mb},{limits.file_mb},{limits.open_files}"


def _memfd(name: str, data: bytes) -> int:
    """A regular file in memory holding `data`, read from the start: stdin as judges give it, and
    the program and the tests handed over without a file on disk that anyone else could read."""
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# -- the processes --------------------------------------------------------------------------------

_BOOT = os.path.join(os.path.dirname(__file__), "boot")


def boot_program(*names: str) -> str:
    """The program a sandboxed interpreter runs (`python -I -c`): the boot files, in order (boot/__init__.py)."""
    out = []
    for n in names:
        with open(os.path.join(_BOOT, f"{n}.py"), encoding="utf-8") as f:
            out.append(f.read())
    return "\n".join(out)


MAIN_BOOT = boot_program("start", "main")


class _Tree:
    """The run's process tree, sampled from /proc: resident memory, CPU seconds (reaped children
    included, through their parents' cutime/cstime) and the number of tasks."""

    _TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    _PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, pid: int):
        self.pid = pid
        self.seen: dict[int, str] = {}  # every process of the run seen so far: pid -> start time

    def kill_rest(self) -> None:
        """Kill every process of the run seen so far that is still there (the same process: its start
        time still matches). A child that outlives the run's main process goes with it, even one that
        left the process group; inside the sandbox the PID namespace already ends them all."""
        import select

        dying = []
        for p, started in list(self.seen.items()):
            fd = None
            try:
                # a pidfd first: the start time is checked on the process the signal then goes to
                fd = os.pidfd_open(p) if hasattr(os, "pidfd_open") else None
                with open(f"/proc/{p}/stat") as f:
                    s = f.read()
                if s[s.rfind(")") + 2:].split()[19] == started:
                    if fd is None:
                        os.kill(p, signal.SIGKILL)
                    else:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                        dying.append(fd)
                        fd = None
            except (OSError, IndexError):
                pass
            finally:
                if fd is not None:
                    os.close(fd)
        # SIGKILL is delivered when the process next runs: until then it is still there (state R) and
        # could still write. Return once each has exited (its pidfd turns readable), so nothing of the
        # run outlives the call that ends it; a process stuck in the kernel is given up on after 5 s.
        deadline = time.monotonic() + 5
        try:
            while dying and (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select(dying, [], [], left)
                for fd in ready:
                    dying.remove(fd)
                    os.close(fd)
        finally:
            for fd in dying:
                os.close(fd)

    def pids(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo and len(out) < 4096:
            p = todo.pop()
            out.append(p)
            try:
                tids = os.listdir(f"/proc/{p}/task")
            except OSError:
                continue
            for t in tids:
                try:
                    with open(f"/proc/{p}/task/{t}/children") as f:
                        todo += [int(x) for x in f.read().split()]
                except (OSError, ValueError):
                    pass
        return out

    def sample(self) -> tuple[float, float, int]:
        """(resident MB, CPU seconds, tasks)."""
        rss = cpu = 0.0
        tasks = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            v = s[s.rfind(")") + 2:].split()
            self.seen.setdefault(p, v[19])
            cpu += sum(int(x) for x in v[11:15]) / self._TICK
            tasks += int(v[17])  # num_threads
            rss += int(v[21]) * self._PAGE
        return rss / (1 << 20), cpu, tasks

    def pss_mb(self) -> float | None:
        """Proportional memory (pages shared between forked children counted once), or None when
        /proc does not let this user read it."""
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    total += next(int(x.split()[1]) for x in f if x.startswith("Pss:"))
            except (OSError, StopIteration, ValueError):
                return None
        return total / 1024


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _spawn(argv: list[str], limits: Limits, sandbox: bool, fds: tuple[int, ...], stdin, stdout, stderr,
           cwd: str) -> subprocess.Popen:
    # No preexec_fn (the limits are the bootstrap's): subprocess can then vfork a large trainer process.
    cmd = [*(_sandbox_argv(limits) if sandbox else []), *argv]
    return subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, pass_fds=fds,
                            start_new_session=True,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **_ONE_THREAD})


def _watch(procs: list[subprocess.Popen], watched: subprocess.Popen, limits: Limits, deadline: float,
           until: subprocess.Popen) -> str | None:
    """Wait for `until` to exit, killing every process group at the wall clock or when `watched`'s
    tree passes the run's memory, CPU or process limit. The reason, or None.

    The run's processes are watched until every one is gone: when `watched` (the answer's main
    process) ends, every process of its tree still there is killed with it, so a forked child cannot
    go on answering the judge's calls or outlive the run."""
    import select

    tree, reason, pause, orphans_killed = _Tree(watched.pid), None, 0.005, False
    try:  # wakes the moment `until` exits, where sleeping would add up to a poll interval to every run
        pidfd = os.pidfd_open(until.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while until.poll() is None:
            if time.monotonic() > deadline:
                reason = "wall"
            elif watched.poll() is None:
                rss, cpu, tasks = tree.sample()
                if cpu > limits.cpu_seconds + 0.5:
                    reason = "cpu"
                elif tasks > limits.processes + 2:  # bwrap's own two processes
                    reason = "processes"
                elif rss > limits.memory_mb and (tree.pss_mb() or rss) > limits.memory_mb:
                    reason = "memory"
            elif not orphans_killed:  # the answer's main process ended: its children go with it
                try:
                    os.killpg(watched.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                tree.kill_rest()
                orphans_killed = True
            if reason:
                for p in procs:
                    _kill_group(p)
                break
            if pidfd is None:
                time.sleep(pause)
            else:
                select.select([pidfd], [], [], pause)
            pause = min(0.05, pause * 1.5)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        tree.kill_rest()
    return reason


def _read_capped(f, cap: int) -> tuple[str, int]:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    return f.read(cap).decode("utf-8", "replace"), size


def _exit_status(code: int | None, reason: str | None, limits: Limits, stderr: str) -> tuple[str, str]:
    """How a process ended, as a test status and its detail."""
    if reason == "wall":
        return "timeout", f"wall-clock limit of {limits.wall_seconds}s; the process group was killed"
    if reason == "cpu":
        return "timeout", f"CPU limit of {limits.cpu_seconds}s for the run's processes together"
    if reason == "memory":
        return "memory_limit", f"the run's processes together held more than {limits.memory_mb} MB"
    if reason == "processes":
        return "process_limit", f"more than {limits.processes} processes and threads"
    # A signal shows as a negative status without the sandbox, and as 128 + signal through bwrap.
    sig_no = -code if code is not None and code < 0 else code - 128 if code is not None and 128 < code < 160 else None
    if sig_no is not None and sig_no in signal.Signals._value2member_map_:
        sig = signal.Signals(sig_no).name
        return ({"SIGXCPU": "timeout", "SIGXFSZ": "output_limit"}.get(sig, "killed"),
                {"SIGXCPU": f"CPU limit of {limits.cpu_seconds}s", "SIGXFSZ": f"wrote more than {limits.file_mb} MB"
                 }.get(sig, f"killed by {sig}"))
    if code == 0:
        return "passed", ""
    last = _last_error(stderr)
    return _error_status(last), last or f"exit status {code}"


def _sandbox_or_refuse(allow_unsandboxed: bool) -> bool:
    ok, why = sandbox_available()
    if ok:
        return True
    if not allow_unsandboxed:  # the sandbox when there is one, the bare process (limits only) when not
        raise SandboxError(f"refusing to run model-written code without a sandbox: {why}")
    return False


def run(program: str, stdin: str = "", limits: Limits | None = None, allow_unsandboxed: bool = False) -> Outcome:
    """Run a Python program as `__main__` in the sandbox, stdin a regular file holding `stdin`.

    `stdout` holds the whole output up to `file_mb` (for comparison; `check_program` keeps only
    `output_bytes` of it in the verdict)."""
    limits = limits or Limits()
    return _run_main(program, stdin, limits, _sandbox_or_refuse(allow_unsandboxed))


def _run_main(program: str, stdin: str, limits: Limits, sandbox: bool) -> Outcome:
    prog = _memfd("solution.py", program.encode())
    inp = _memfd("stdin", stdin.encode())
    lim = _limits_arg(limits, sandbox)
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory(prefix="distill-exec-") as work:
        try:
            p = _spawn([_python(), "-I", "-c", MAIN_BOOT, lim, str(prog)], limits, sandbox, (prog,),
                       inp, out, err, work)
        finally:
            os.close(prog)
            os.close(inp)
        reason = _watch([p], p, limits, start + limits.wall_seconds, p)
        p.wait()
        seconds = time.monotonic() - start
        stdout, size = _read_capped(out, limits.file_mb << 20)
        stderr, _ = _read_capped(err, limits.output_bytes)
    status, detail = _exit_status(p.returncode, reason, limits, stderr)
    return Outcome(status, None if reason == "wall" else p.returncode, round(seconds, 3), stdout, stderr, detail,
                   {"sandboxed": sandbox, "stdout_bytes": size})


_ERRORS = (("AssertionError", "failed"), ("MemoryError", "memory_limit"), ("File too large", "output_limit"),
           ("Resource temporarily unavailable", "process_limit"), ("RecursionError", "runtime_error"),
           ("No space left on device", "output_limit"), ("can't start new thread", "process_limit"))


def _error_status(last: str) -> str:
    """A failed assert is a failed test; the limits name themselves; anything else is a runtime error."""
    for needle, status in _ERRORS:
        if needle in last:
            return status
    return "runtime_error"


def _last_error(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""
