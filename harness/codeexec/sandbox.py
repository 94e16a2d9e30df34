"""Run model-generated code (HumanEval completions) isolated from the host.

Running generated code is opt-in. `run_job` and `run_jobs` take an explicit
`allow_code_execution` argument; the lm-eval task path (harness.codeexec.humaneval) reads it from the
environment variable HARNESS_ALLOW_CODE_EXECUTION=1, which the runner sets from the config
key `allow_code_execution: true` or the CLI flag `--allow-code-execution`.

Each job gets its own processes, started through `unshare` where the kernel allows:

- a new session and process group, killed as a whole (SIGKILL) at the wall-clock timeout;
- a new network namespace (no interfaces but a downed loopback), a new PID namespace with
  its own /proc, and a mount namespace with private tmpfs over /tmp, /var/tmp, /dev/shm and
  /run/lock;
- the generated code runs as uid/gid 65534 (nobody) with no supplementary groups when the
  harness runs as root, or as the mapped user of a user namespace otherwise, with
  no_new_privs set (set-uid binaries gain nothing);
- a fresh working directory (removed afterwards), stdin from /dev/null, stdout and stderr
  discarded, a minimal environment (no variable of the parent is passed on), and rlimits
  on CPU time, address space, file size, process count, open files and core dumps.

What is actually in force is probed once per process (`isolation()`) and returned as a
dict for the run manifest. As root with neither a PID namespace nor a uid drop, code is
refused unless `allow_root_without_isolation=True`.

A pass is decided outside the generated code: a trusted checker process holds the test and a
per-job random nonce; the generated function runs in a separate, unprivileged worker process
and is only reachable through a proxy that exchanges plain data (see harness/codeexec/inside.py).
The checker reports the nonce with passed=true only when the test script has returned
normally after calling the candidate at least once.

Not covered: the rest of the file system stays readable wherever the sandbox uid may read
(so a program could find the HumanEval data with its canonical solutions in site-packages
and run it), and writable wherever that uid may write outside the private tmpfs mounts;
kernel exploits; CPU and memory contention with other jobs (a slow but correct solution can
time out on a loaded machine); timing side channels. Without a PID namespace, a program that
calls setsid() can outlive the timeout kill, and `kill(-1, 9)` reaches every process of the
sandbox uid, including concurrent jobs.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hmac import compare_digest

from harness.errors import UsageError

ALLOW_ENV = "HARNESS_ALLOW_CODE_EXECUTION"
CODEEXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inside.py")
NOBODY = 65534
MAX_RESULT = 1 << 20


class CodeExecutionRefused(UsageError):
    """Running generated code was not allowed, or cannot be made safe enough here."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall clock, seconds, for the whole job including start-up
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20
    processes: int = 64  # counted per uid by the kernel, so shared by concurrent jobs
    open_files: int = 64

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_CPU": int(self.cpu_seconds),
            "RLIMIT_AS": int(self.memory_bytes),
            "RLIMIT_FSIZE": int(self.file_bytes),
            "RLIMIT_NPROC": int(self.processes),
            "RLIMIT_NOFILE": int(self.open_files),
            "RLIMIT_CORE": 0,
        }


@dataclass(frozen=True)
class Job:
    """`program` is untrusted; `setup` and `test` are trusted and run in the checker.

    The test script sees the candidate under the name `entry_point` (after `setup` ran)
    and fails by raising.
    """

    program: str
    entry_point: str
    test: str
    setup: str = ""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # passed | failed | timeout | error (the sandbox itself failed)
    detail: str
    seconds: float


@dataclass(frozen=True)
class Isolation:
    prefix: tuple[str, ...]
    uid: int | None  # worker uid/gid after dropping; None: no drop
    gid: int | None
    worker_python: str
    private_tmp: bool
    report: dict

    @property
    def contains_pids(self) -> bool:
        return self.report["pid"] == "pidns"


def permission_from_env() -> bool:
    return os.environ.get(ALLOW_ENV) == "1"


def require_permission(allowed: bool) -> None:
    if not allowed:
        raise CodeExecutionRefused(
            "refusing to run model-generated code: set allow_code_execution: true "
            f"(or --allow-code-execution, or {ALLOW_ENV}=1) to allow it"
        )


def run_job(
    job: Job, *, allow_code_execution: bool, limits: Limits = Limits(), allow_root_without_isolation: bool = False
) -> Outcome:
    return run_jobs(
        [job],
        allow_code_execution=allow_code_execution,
        limits=limits,
        workers=1,
        allow_root_without_isolation=allow_root_without_isolation,
    )[0]


def run_jobs(
    jobs: Sequence[Job],
    *,
    allow_code_execution: bool,
    limits: Limits = Limits(),
    workers: int | None = None,
    allow_root_without_isolation: bool = False,
) -> list[Outcome]:
    """Outcomes in the order of `jobs`; each job is independent of the others."""
    require_permission(allow_code_execution)
    iso = isolation_in_force(allow_root_without_isolation)
    workers = max(1, workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _execute(job, iso, limits), jobs))


def isolation(limits: Limits = Limits()) -> dict:
    """What the sandbox enforces on this machine, for the run manifest."""
    report = dict(probe().report)
    report["rlimits"] = limits.rlimits()
    report["timeout_s"] = limits.timeout
    return report


def isolation_in_force(allow_root_without_isolation: bool = False) -> Isolation:
    iso = probe()
    unprotected_root = os.geteuid() == 0 and iso.uid is None and not iso.contains_pids
    if unprotected_root and not allow_root_without_isolation:
        raise CodeExecutionRefused(
            "refusing to run generated code as root without a PID namespace or uid drop "
            f"(probe found: {iso.report}); pass allow_root_without_isolation=True to override"
        )
    return iso


_probe_lock = threading.Lock()
_probed: Isolation | None = None


def probe(refresh: bool = False) -> Isolation:
    """Try configurations from strongest to weakest; keep the first that verifiably works."""
    global _probed
    with _probe_lock:
        if _probed is None or refresh:
            _probed = _probe()
        return _probed


def _probe() -> Isolation:
    job = Job(program="def f(x):\n    return x + 1\n", entry_point="f", test="assert f(1) == 2\n")
    host = _namespaces()
    tried = []
    for candidate in _candidates():
        outcome, facts = _run(job, candidate, Limits(timeout=30))
        problem = outcome.detail if not outcome.passed else _verify(candidate, facts, host)
        if problem is None:
            return _described(candidate, facts, host)
        tried.append(
            f"{' '.join(candidate.prefix) or 'no unshare'}"
            f" uid={candidate.uid} python={candidate.worker_python}: {problem}"
        )
    raise CodeExecutionRefused("no working sandbox configuration: " + "; ".join(tried))


def _candidates():
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    root = os.geteuid() == 0
    namespaces = ("--net", "--pid", "--fork", "--mount-proc", "--kill-child")
    prefixes: list[tuple[str, ...]] = []
    if unshare and root:
        prefixes += [(unshare, *namespaces), (unshare, "--net")]
    elif unshare:
        user = (unshare, "--user", "--map-root-user")
        prefixes += [(*user, *namespaces), (*user, "--net")]
    prefixes.append(())
    # The venv's interpreter may live where nobody cannot read (a pyenv under /root);
    # the worker then needs another interpreter of the same kind.
    pythons = list(
        dict.fromkeys(
            p
            for p in (
                sys.executable,
                getattr(sys, "_base_executable", None),
                shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin"),
            )
            if p
        )
    )
    for prefix in prefixes:
        private_tmp = "--mount-proc" in prefix
        if root:
            for python in pythons:
                yield Isolation(prefix, NOBODY, NOBODY, python, private_tmp, {})
        yield Isolation(prefix, None, None, sys.executable, private_tmp, {})


def _verify(candidate: Isolation, facts: dict, host: dict) -> str | None:
    worker = facts.get("worker", {})
    ns = worker.get("ns", {})
    if "--net" in candidate.prefix and ns.get("net") == host["net"]:
        return "network namespace not in force"
    if "--pid" in candidate.prefix and ns.get("pid") == host["pid"]:
        return "PID namespace not in force"
    if candidate.uid is not None and worker.get("uid") != candidate.uid:
        return f"worker uid is {worker.get('uid')}, not {candidate.uid}"
    if candidate.private_tmp and not facts.get("private_tmp"):
        return "private /tmp not mounted"
    return None


def _described(candidate: Isolation, facts: dict, host: dict) -> Isolation:
    worker = facts["worker"]
    ns = worker["ns"]
    if candidate.uid is not None:
        user = f"uid {worker['uid']}"
    elif ns.get("user") != host["user"]:
        user = f"user namespace (uid {worker['uid']} inside, uid {os.geteuid()} outside)"
    else:
        user = f"uid {worker['uid']} (not dropped)"
    report = {
        "network": "netns" if ns.get("net") != host["net"] else "host",
        "pid": "pidns" if ns.get("pid") != host["pid"] else "host",
        "user": user,
        "private_tmp": facts.get("private_tmp", []),
        "python": f"{worker['executable']} {worker['python']}",
        "unshare": " ".join(candidate.prefix[1:]) or None,
        "pass_channel": "nonce from a separate non-dumpable checker process",
    }
    return Isolation(
        candidate.prefix, candidate.uid, candidate.gid, candidate.worker_python, candidate.private_tmp, report
    )


def _namespaces() -> dict:
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("net", "pid", "user")}


def _environment() -> dict[str, str]:
    # Built from scratch: nothing of the parent's environment (tokens, keys) is passed on.
    # A fixed hash seed keeps set and dict-of-str iteration order identical between runs.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/nonexistent",
        "TMPDIR": "/tmp",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _execute(job: Job, iso: Isolation, limits: Limits) -> Outcome:
    outcome, facts = _run(job, iso, limits)
    if outcome.status in ("passed", "failed"):
        worker = facts.get("worker", {})
        if iso.uid is not None and worker.get("uid") != iso.uid:
            return Outcome(False, "error", "worker ran with an unexpected uid", outcome.seconds)
    return outcome


def _run(job: Job, iso: Isolation, limits: Limits) -> tuple[Outcome, dict]:
    start = time.monotonic()
    deadline = start + limits.timeout
    nonce = secrets.token_hex(16)
    payload = json.dumps(
        {
            "nonce": nonce,
            "program": job.program,
            "entry_point": job.entry_point,
            "setup": job.setup,
            "test": job.test,
            "limits": limits.rlimits(),
            "private_tmp": iso.private_tmp,
            "env": _environment(),
            "worker": {"python": iso.worker_python, "uid": iso.uid, "gid": iso.gid},
        }
    ).encode()
    workdir = tempfile.mkdtemp(prefix="harness-sandbox-")
    try:
        if iso.uid is not None and iso.gid is not None:
            os.chown(workdir, iso.uid, iso.gid)
        with tempfile.TemporaryFile() as errors:
            raw, timed_out = _spawn_and_wait(iso, workdir, payload, deadline, errors)
            errors.seek(0)
            stderr = errors.read()[-2000:].decode(errors="replace").strip()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = round(time.monotonic() - start, 3)
    if timed_out:
        return Outcome(False, "timeout", f"killed after {limits.timeout} s", seconds), {}
    try:
        result = json.loads(raw)
        genuine = compare_digest(str(result.get("nonce", "")), nonce)
    except (ValueError, AttributeError):
        result, genuine = {}, False
    if not genuine:
        tail = stderr.splitlines()[-1] if stderr else "no output"
        return Outcome(False, "error", f"checker gave no valid result ({tail})", seconds), {}
    facts = result.get("facts") or {}
    if result.get("error"):
        return Outcome(False, "error", result.get("detail", ""), seconds), facts
    passed = result.get("passed") is True
    return Outcome(passed, "passed" if passed else "failed", result.get("detail", ""), seconds), facts


def _spawn_and_wait(iso, workdir, payload, deadline, errors) -> tuple[bytes, bool]:
    job_r, job_w = os.pipe()
    result_r, result_w = os.pipe()
    try:
        process = subprocess.Popen(
            [*iso.prefix, sys.executable, "-s", CODEEXEC, "checker", str(job_r), str(result_w)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            cwd=workdir,
            env=_environment(),
            start_new_session=True,
            pass_fds=(job_r, result_w),
        )
    except BaseException:
        for fd in (job_w, result_r):
            os.close(fd)
        raise
    finally:
        os.close(job_r)
        os.close(result_w)
    try:
        try:
            with open(job_w, "wb") as f:
                f.write(payload)
        except BrokenPipeError:
            pass  # the checker died early; the missing result says so
        raw, timed_out = _read_until(result_r, deadline)
        if not timed_out:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        return raw, timed_out
    finally:
        os.close(result_r)
        _stop(process, bool(iso.prefix))


def _stop(process: subprocess.Popen, forked: bool) -> None:
    if forked:
        # Kill unshare's child first and let unshare reap it: the kernel finishes that only
        # once every process of the PID namespace is gone, so no job's processes (and no
        # share of the sandbox uid's process count) outlive it.
        for child in _children(process.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass
    # Also after a normal exit: without a PID namespace, stray children may remain.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), True
        if not poller.poll(remaining * 1000):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size <= MAX_RESULT:
            chunks.append(chunk)
