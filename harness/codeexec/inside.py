"""The side of the sandbox that runs inside it (see harness/codeexec/sandbox.py for the host side).

Run as a script, never imported by untrusted code. Standard library only and Python 3.8
syntax, because the worker may run under a different interpreter than the harness.

Two processes per job:

- checker (trusted): reads the job and a random nonce from an inherited pipe, makes itself
  non-dumpable (so a same-uid process cannot ptrace it or open its /proc files), mounts
  private tmpfs over world-writable directories when it can, starts the worker, then runs
  the trusted setup and test code with the candidate function replaced by a proxy that
  calls into the worker. Only if the test script returns normally, after at least one call,
  does it write the nonce with passed=true to the result pipe.
- worker (untrusted, unprivileged uid where possible, no_new_privs): executes the generated program and
  answers calls with plain data (None, bool, int, float, str, bytes, complex, list, tuple,
  set, frozenset, dict). It never holds the nonce or the result pipe, and shares no memory
  with the checker, so exiting early, patching builtins, or returning objects whose
  ``__eq__`` always says True cannot produce a pass.
"""

import json
import os
import subprocess
import sys

MAX_MESSAGE = 8 << 20  # bytes; a larger reply is treated as a failure, not buffered
MAX_DETAIL = 400
TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


# ---------------------------------------------------------------------- plain-data codec
# Every JSON object on the wire is a one-key tag; lists are lists. Type checks are exact
# (type(x) is int) on the decoding side so no subclass with custom methods gets through.


def encode(value, depth=0):
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(value)
    if value is None or t in (bool, int, str):
        return value
    if t is float:
        return {"f": repr(value)}  # repr keeps nan/inf and every bit of the value
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"t": [encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is set:
        return {"s": [encode(v, depth + 1) for v in value]}
    if t is frozenset:
        return {"z": [encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"b": value.hex()}
    if t is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    return encode(_plain_scalar(value), depth + 1)


def _plain_scalar(value):
    """Numbers from numpy and the like compare equal to builtins in a normal run; keep that."""
    import numbers

    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, numbers.Complex):
        return complex(value)
    raise TypeError(f"cannot pass a {type(value).__name__} across the sandbox boundary")


def decode(obj, depth=0):
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(obj)
    if obj is None or t in (bool, int, str):
        return obj
    if t is list:
        return [decode(v, depth + 1) for v in obj]
    if t is dict and len(obj) == 1:
        ((tag, body),) = obj.items()
        if tag == "f" and type(body) is str:
            return float(body)
        if tag == "c" and type(body) is list and len(body) == 2:
            return complex(float(body[0]), float(body[1]))
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if type(body) is list:
            items = [decode(v, depth + 1) for v in body]
            if tag == "t":
                return tuple(items)
            if tag == "s":
                return set(items)
            if tag == "z":
                return frozenset(items)
            if tag == "d" and all(type(p) is list and len(p) == 2 for p in items):
                return {k: v for k, v in items}
    raise ValueError("malformed value from the sandbox")


def _send(stream, message):
    stream.write(json.dumps(message, allow_nan=False).encode() + b"\n")
    stream.flush()


def _receive(stream):
    line = stream.readline(MAX_MESSAGE + 1)
    if not line.endswith(b"\n"):
        raise EOFError("no complete message" if len(line) <= MAX_MESSAGE else "message too large")
    return json.loads(line)


def _short(text):
    text = str(text)
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "..."


def _namespaces():
    found = {}
    for kind in ("net", "pid", "user", "mnt"):
        try:
            found[kind] = os.readlink("/proc/self/ns/" + kind)
        except OSError:
            found[kind] = None
    return found


# ------------------------------------------------------------------------------ worker
def _set_limits(limits):
    import resource

    for name, value in limits.items():
        which = getattr(resource, name)
        resource.setrlimit(which, (value, value))


def _forbid_new_privileges():
    # Set-uid binaries (su, mount, ...) then run without their privileges.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS, 1) failed")


def worker_main(request_fd, reply_fd):
    requests = os.fdopen(request_fd, "rb")
    replies = os.fdopen(reply_fd, "wb")
    setup = _receive(requests)
    _set_limits(setup["limits"])
    _forbid_new_privileges()
    import resource

    # Facts are gathered before any untrusted code runs, so they can be trusted.
    _send(
        replies,
        {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "pid": os.getpid(),
            "ns": _namespaces(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "limits": {n: resource.getrlimit(getattr(resource, n))[0] for n in setup["limits"]},
        },
    )
    namespace = {"__name__": "__candidate__"}
    load_error = None
    try:
        exec(compile(setup["program"], "<candidate>", "exec"), namespace)  # noqa: S102 - the job
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: exiting early is a failure
        load_error = f"program failed to load: {type(exc).__name__}: {_short(exc)}"
    function = namespace.get(setup["entry_point"])
    if load_error is None and not callable(function):
        load_error = f"program does not define {setup['entry_point']}()"
    while True:
        try:
            call = _receive(requests)
        except EOFError:
            return
        if load_error is not None:
            _send(replies, {"error": "RuntimeError", "message": load_error})
            continue
        try:
            value = function(*decode(call["args"]), **decode(call["kwargs"]))
            reply = {"value": encode(value)}
        except BaseException as exc:  # noqa: BLE001 - reported to the checker as a failure
            reply = {"error": type(exc).__name__, "message": _short(exc)}
        _send(replies, reply)


# ----------------------------------------------------------------------------- checker
class CandidateCrashed(RuntimeError):
    """The worker process died or sent something unreadable."""


class _Candidate:
    """Stands in for the generated function inside the trusted test code."""

    def __init__(self, process, requests, replies):
        self._process, self._requests, self._replies = process, requests, replies
        self.calls = 0

    def __call__(self, *args, **kwargs):
        try:
            _send(self._requests, {"args": encode(list(args)), "kwargs": encode(kwargs)})
            reply = _receive(self._replies)
        except (OSError, EOFError, ValueError) as exc:
            raise CandidateCrashed(self._death(exc)) from None
        if type(reply) is not dict:
            raise CandidateCrashed("malformed reply")
        if "error" in reply:
            raise _exception_class(reply.get("error"))(_short(reply.get("message", "")))
        self.calls += 1
        return decode(reply.get("value"))

    def _death(self, exc):
        try:
            code = self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return f"candidate process stopped answering ({exc})"
        if code < 0:
            return f"candidate process killed by signal {-code}"
        return f"candidate process exited with code {code}"


def _exception_class(name):
    import builtins

    cls = getattr(builtins, str(name), None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return RuntimeError


def _make_undumpable():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _mount_private_tmp():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mounted = []
    for path in TMPFS_DIRS:
        if not os.path.isdir(path):
            continue
        flags = 2 | 4  # MS_NOSUID | MS_NODEV
        if libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, b"size=64m,mode=1777") != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mounting tmpfs on {path}: {os.strerror(err)}")
        mounted.append(path)
    return mounted


def _start_worker(job):
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        source = f.read()
    worker = job["worker"]
    drop = worker["uid"] is not None
    process = subprocess.Popen(
        [worker["python"], "-s", "-c", source, "worker", str(request_r), str(reply_w)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(request_r, reply_w),
        close_fds=True,
        env=job["env"],
        user=worker["uid"] if drop else None,
        group=worker["gid"] if drop else None,
        extra_groups=[] if drop else None,
    )
    os.close(request_r)
    os.close(reply_w)
    return process, os.fdopen(request_w, "wb"), os.fdopen(reply_r, "rb")


def run_checker(job):
    """Everything the checker does after reading the job; returns the result fields."""
    _make_undumpable()
    facts = {"checker_pid": os.getpid(), "checker_ns": _namespaces(), "private_tmp": []}
    if job["private_tmp"]:
        facts["private_tmp"] = _mount_private_tmp()
    process, requests, replies = _start_worker(job)
    try:
        _send(requests, {"program": job["program"], "entry_point": job["entry_point"], "limits": job["limits"]})
        try:
            facts["worker"] = _receive(replies)
        except (EOFError, ValueError) as exc:
            return {"passed": False, "detail": f"worker failed to start: {exc}", "facts": facts}
        candidate = _Candidate(process, requests, replies)
        namespace = {"__name__": "__check__"}
        try:
            exec(compile(job["setup"], "<setup>", "exec"), namespace)  # noqa: S102 - trusted
            namespace[job["entry_point"]] = candidate
            exec(compile(job["test"], "<test>", "exec"), namespace)  # noqa: S102 - trusted
        except BaseException as exc:  # noqa: BLE001 - any way out of the test is a failure
            return {"passed": False, "detail": f"{type(exc).__name__}: {_short(exc)}", "facts": facts}
        if candidate.calls == 0:
            return {"passed": False, "detail": "test never called the candidate", "facts": facts}
        return {"passed": True, "detail": "", "facts": facts}
    finally:
        process.kill()
        process.wait()


def checker_main(job_fd, result_fd):
    with os.fdopen(job_fd, "rb") as f:
        job = json.loads(f.read())
    nonce = job.pop("nonce")
    with os.fdopen(result_fd, "wb") as out:
        try:
            result = run_checker(job)
        except Exception as exc:  # noqa: BLE001 - reported as a sandbox error, not a crash
            result = {"passed": False, "error": True, "detail": f"{type(exc).__name__}: {_short(exc)}"}
        result["nonce"] = nonce
        out.write(json.dumps(result).encode())


if __name__ == "__main__":
    # As a script, sys.path[0] is the harness package folder; its modules must not shadow
    # the standard library for the checker.
    here = globals().get("__file__")
    if here and sys.path and sys.path[0] == os.path.dirname(os.path.abspath(here)):
        del sys.path[0]
    role, first_fd, second_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if role == "checker":
        checker_main(first_fd, second_fd)
    elif role == "worker":
        worker_main(first_fd, second_fd)
    else:
        raise SystemExit(f"unknown role {role!r}")
