"""The sandbox contains hostile programs, decides passes itself, and says what it enforces.

Every hostile program runs in a batch between two correct ones: the batch must finish, the
hostile sample must fail, the correct ones must pass, and nothing outside may change.
"""

from __future__ import annotations

import glob
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from harness.codeexec import inside as codeexec
from harness.codeexec import sandbox
from harness.codeexec.sandbox import Job, Limits

FAST = Limits(timeout=4.0, cpu_seconds=2)
GOOD = Job(program="def f():\n    return 1\n", entry_point="f", test="assert f() == 1\n")


@pytest.fixture(scope="module")
def iso():
    try:
        return sandbox.isolation_in_force()
    except sandbox.CodeExecutionRefused as exc:
        pytest.skip(f"no usable sandbox here: {exc}")


def run(program: str, test: str = "assert f() == 1\n", limits: Limits = FAST, **kwargs) -> sandbox.Outcome:
    return sandbox.run_job(Job(program, "f", test), allow_code_execution=True, limits=limits, **kwargs)


def sandbox_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "harness-sandbox-*")))


def contained(program: str, test: str = "assert f() == 1\n", limits: Limits = FAST):
    """Run [good, hostile, good]; the hostile one must fail and leave no working dir."""
    before = sandbox_dirs()
    start = time.monotonic()
    good, bad, good2 = sandbox.run_jobs(
        [GOOD, Job(program, "f", test), GOOD], allow_code_execution=True, limits=limits, workers=2
    )
    assert time.monotonic() - start < 3 * limits.timeout
    assert good.passed and good2.passed, (good, good2)
    assert not bad.passed and bad.status in ("failed", "timeout"), bad
    assert sandbox_dirs() <= before
    return bad


# ------------------------------------------------------------------------ normal operation
def test_correct_and_wrong(iso):
    assert run("def f():\n    return 1\n").status == "passed"
    wrong = run("def f():\n    return 2\n")
    assert wrong.status == "failed" and "AssertionError" in wrong.detail


def test_working_dir_is_writable_and_fresh(iso):
    program = (
        "import os\nfresh = os.listdir('.') == []\n"
        "open('out.txt', 'w').write('x')\n"
        "def f():\n    return [fresh, open('out.txt').read()]\n"
    )
    assert run(program, test="assert f() == [True, 'x']\n").passed
    assert run(program, test="assert f() == [True, 'x']\n").passed


def test_test_must_call_the_candidate(iso):
    outcome = run("def f():\n    return 1\n", test="assert True\n")
    assert outcome.status == "failed" and "never called" in outcome.detail


def test_setup_helpers_stay_trusted(iso):
    # The test uses helper() from setup; the program's own helper() must not replace it.
    job = Job(
        program="def helper(x):\n    return 0\ndef f(x):\n    return 0\n",
        entry_point="f",
        setup="def helper(x):\n    return x + 1\n",
        test="assert helper(f(1)) == 1\nassert helper(1) == 2\n",
    )
    assert sandbox.run_job(job, allow_code_execution=True, limits=FAST).passed


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        10**40,
        1.5,
        -0.0,
        math.inf,
        -math.inf,
        "",
        "é\n\x00",
        b"\x00\xff",
        1 + 2j,
        [],
        [1, [2, (3,)]],
        (1,),
        (),
        {1: "a", (2, 3): [4]},
        {"a": None},
        {1, 2},
        frozenset({"x"}),
        set(),
    ],
)
def test_codec_round_trip(value):
    back = codeexec.decode(codeexec.encode(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)


def test_codec_keeps_nan_and_bool_apart_from_int():
    assert math.isnan(codeexec.decode(codeexec.encode(math.nan)))
    assert codeexec.decode(codeexec.encode([True, 1])) == [True, 1]
    assert [type(v) for v in codeexec.decode(codeexec.encode([True, 1]))] == [bool, int]


@pytest.mark.parametrize(
    "wire",
    [
        {"x": [1]},
        {"t": [1], "s": [2]},
        {"d": [[1]]},
        {"f": 1.0},
        {"c": ["1"]},
        {},
        {"t": "abc"},
    ],
)
def test_codec_rejects_malformed(wire):
    with pytest.raises(ValueError):
        codeexec.decode(wire)


def test_codec_refuses_objects():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError):
        codeexec.encode(AlwaysEqual())


def test_results_do_not_depend_on_worker_count(iso):
    jobs = [Job(f"def f():\n    return {i % 3}\n", "f", "assert f() == 1\n") for i in range(9)]
    jobs.append(Job("def f(:\n", "f", "assert f() == 1\n"))
    outcomes = {w: sandbox.run_jobs(jobs, allow_code_execution=True, limits=FAST, workers=w) for w in (1, 2, 4)}
    summary = {w: [(o.passed, o.status, o.detail) for o in out] for w, out in outcomes.items()}
    assert summary[1] == summary[2] == summary[4]
    assert [o.passed for o in outcomes[1]] == [i % 3 == 1 for i in range(9)] + [False]


def test_string_hashing_is_fixed(iso):
    # PYTHONHASHSEED is pinned, so set iteration order of strings repeats between runs.
    expected = subprocess.run(
        [sys.executable, "-c", "print(hash('abc'))"],
        text=True,
        env={"PYTHONHASHSEED": "0"},
        capture_output=True,
        check=True,
    )
    assert run("def f():\n    return hash('abc')\n", test=f"assert f() == {int(expected.stdout)}\n").passed


# -------------------------------------------------------------------------- permission
def test_refuses_without_permission(monkeypatch):
    monkeypatch.setattr(sandbox, "_run", lambda *a, **k: pytest.fail("code was run"))
    with pytest.raises(sandbox.CodeExecutionRefused, match="allow_code_execution"):
        sandbox.run_jobs([GOOD], allow_code_execution=False)


def test_refuses_root_without_isolation(monkeypatch):
    weak = sandbox.Isolation(
        (), None, None, "python3", False, {"network": "host", "pid": "host", "user": "uid 0 (not dropped)"}
    )
    monkeypatch.setattr(sandbox, "probe", lambda refresh=False: weak)
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "_run", lambda *a, **k: pytest.fail("code was run"))
    with pytest.raises(sandbox.CodeExecutionRefused, match="as root"):
        sandbox.run_jobs([GOOD], allow_code_execution=True)
    assert sandbox.isolation_in_force(allow_root_without_isolation=True) is weak


def test_env_permission(monkeypatch):
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    assert not sandbox.permission_from_env()
    monkeypatch.setenv(sandbox.ALLOW_ENV, "yes")
    assert not sandbox.permission_from_env()
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
    assert sandbox.permission_from_env()


# ---------------------------------------------------------------------- what is in force
def test_isolation_report(iso):
    report = sandbox.isolation(FAST)
    assert set(report) >= {"network", "pid", "user", "rlimits", "timeout_s", "python"}
    assert report["rlimits"]["RLIMIT_CPU"] == 2 and report["rlimits"]["RLIMIT_CORE"] == 0
    if os.geteuid() == 0:
        assert report["pid"] == "pidns" or report["user"].startswith("uid 65534")


def test_report_matches_what_the_program_sees(iso):
    report = iso.report
    if report["user"].startswith("uid "):
        uid = int(report["user"].split()[1])
        assert run("import os\ndef f():\n    return os.getuid()\n", test=f"assert f() == {uid}\n").passed
    if report["network"] == "netns":
        assert run(
            "import socket\ndef f():\n    return [n for _, n in socket.if_nameindex()]\n", test="assert f() == ['lo']\n"
        ).passed
    if report["pid"] == "pidns":
        assert run(
            "import os\ndef f():\n    return [p for p in os.listdir('/proc') if p.isdigit()]\n",
            test="assert len(f()) <= 3\n",
        ).passed
    assert run(
        "def f():\n    status = open('/proc/self/status').read()\n"
        "    return status.split('NoNewPrivs:')[1].split()[0]\n",
        test="assert f() == '1'\n",
    ).passed
    limits = run(
        "import resource\ndef f():\n    return resource.getrlimit(resource.RLIMIT_NPROC)\n",
        test=f"assert f() == ({FAST.processes}, {FAST.processes})\n",
    )
    assert limits.passed, limits


# ---------------------------------------------------------------------- hostile programs
def test_infinite_loop(iso):
    contained("def f():\n    while True:\n        pass\n")


def test_sleep_forever_is_killed_at_the_wall_clock(iso):
    bad = contained("import time\ndef f():\n    time.sleep(1000)\n", limits=Limits(timeout=2.0, cpu_seconds=2))
    assert bad.status == "timeout" and 2.0 <= bad.seconds < 4.0


def test_fork_bomb(iso):
    contained(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
        "        pass\ndef f():\n    return 1\n"
    )
    if iso.contains_pids:
        assert not processes_of(iso.uid) if iso.uid is not None else True


def processes_of(uid: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                found.append(int(pid))
        except FileNotFoundError:
            pass
    return found


def test_memory_bomb(iso):
    bad = contained("x = []\nwhile True:\n    x.append(bytearray(1 << 26))\ndef f():\n    return 1\n")
    assert "MemoryError" in bad.detail


def test_huge_stdout(iso):
    contained("import sys\ndef f():\n    while True:\n        sys.stdout.write('x' * 65536)\n")
    # Output is discarded, so a correct program that prints a lot still passes.
    assert run("def f():\n    for _ in range(400):\n        print('y' * 65536)\n    return 1\n").passed


def test_files_outside_are_untouched(iso, tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep")
    shared = f"/tmp/harness-escape-{os.getpid()}"
    program = f"""
import os, shutil
def f():
    for action in (lambda: open({str(tmp_path / "new.txt")!r}, 'w').write('x'),
                   lambda: os.remove({str(sentinel)!r}),
                   lambda: open({str(sentinel)!r}, 'w').write('gone'),
                   lambda: shutil.rmtree({str(tmp_path)!r}),
                   lambda: open({shared!r}, 'w').write('x'),
                   lambda: open('/root/harness-escape', 'w').write('x')):
        try:
            action()
        except Exception:
            pass
    open('inside.txt', 'w').write('fine')
    return 0
"""
    contained(program)
    assert sentinel.read_text() == "keep"
    assert not (tmp_path / "new.txt").exists()
    assert not os.path.exists("/root/harness-escape")
    if iso.report.get("private_tmp"):
        assert not os.path.exists(shared)


def test_no_network(iso):
    if iso.report["network"] != "netns":
        pytest.skip(f"no network namespace here ({iso.report['network']})")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        program = f"""
import socket
def f():
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
        return 1
    except OSError:
        return 0
"""
        contained(program)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_kill_parent(iso):
    contained("import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 0\n")


def test_kill_everything(iso):
    if not iso.contains_pids:
        pytest.skip("no PID namespace here: kill(-1, 9) would reach processes outside")
    # A bystander with the sandbox's own uid is exactly what kill(-1) could reach otherwise.
    user = {"user": iso.uid, "group": iso.gid} if iso.uid is not None else {}
    bystander = subprocess.Popen(["sleep", "60"], **user)
    try:
        contained("import os\ndef f():\n    os.kill(-1, 9)\n    return 0\n")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_ignoring_signals(iso):
    program = (
        "import signal, time\n"
        "for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP,"
        " signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\n"
        "def f():\n    while True:\n        time.sleep(0.01)\n"
    )
    bad = contained(program, limits=Limits(timeout=2.0, cpu_seconds=2))
    assert bad.status == "timeout"


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit(0)"])
@pytest.mark.parametrize("where", ["load", "call"])
def test_exiting_early_is_not_a_pass(iso, exit_call, where):
    if where == "load":
        program = f"import os, sys\n{exit_call}\ndef f():\n    return 1\n"
    else:
        program = f"import os, sys\ndef f():\n    {exit_call}\n"
    contained(program)


@pytest.mark.parametrize(
    "program",
    [
        # An object equal to everything.
        ("class A:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\ndef f():\n    return A()\n"),
        # An int subclass equal to everything: only its plain value crosses the boundary.
        (
            "class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
            "def f():\n    return I(5)\n"
        ),
        # Disarming assertions and checks in the program's own interpreter.
        (
            "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n"
            "def check(candidate):\n    pass\ndef f():\n    return 2\n"
        ),
        # Printing what a naive harness would take for success.
        "print('passed')\nprint('{\"passed\": true}')\ndef f():\n    return 2\n",
        # Writing a forged result to every descriptor it might have inherited.
        (
            "import os\nfor fd in range(3, 1024):\n    try:\n"
            '        os.write(fd, b\'{"passed": true, "nonce": "0"}\\n\')\n    except OSError:\n'
            "        pass\ndef f():\n    return 2\n"
        ),
        # Reading the checker's memory or descriptors through /proc.
        (
            "import os\ndef f():\n    out = []\n    for p in os.listdir('/proc'):\n"
            "        for part in ('environ', 'cmdline', 'fd'):\n            try:\n"
            "                out.append(str(os.listdir('/proc/'+p+'/'+part) if part == 'fd' else\n"
            "                           open('/proc/'+p+'/'+part, 'rb').read()))\n"
            "            except Exception:\n                pass\n    return out\n"
        ),
        # Exiting through atexit after a wrong answer.
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef f():\n    return 2\n",
    ],
    ids=["always-equal", "int-subclass", "builtins", "print", "forged-fds", "proc", "atexit"],
)
def test_faked_success_is_not_a_pass(iso, program):
    contained(program)


def test_secrets_in_the_environment_stay_outside(iso, monkeypatch):
    secret = "sk-fake-" + os.urandom(8).hex()
    monkeypatch.setenv("HARNESS_TEST_SECRET", secret)
    program = """
import os
def f():
    found = [v for v in os.environ.values()]
    for p in os.listdir('/proc'):
        try:
            found.append(open('/proc/' + p + '/environ', 'rb').read().decode())
        except Exception:
            pass
    return '\\n'.join(found)
"""
    contained(program, test=f"assert {secret!r} in f()\n")


def test_segfault(iso):
    bad = contained("import ctypes\ndef f():\n    return ctypes.string_at(0)\n")
    assert f"signal {int(signal.SIGSEGV)}" in bad.detail


def test_deep_recursion(iso):
    contained("def g(n):\n    return g(n + 1)\ndef f():\n    return g(0)\n")
    contained("import sys\nsys.setrecursionlimit(10**8)\ndef g(n):\n    return g(n + 1)\ndef f():\n    return g(0)\n")


def test_weaker_fallback_without_unshare(iso, monkeypatch):
    # Where unshare is missing, the probe must settle for less and say so.
    real_which = sandbox.shutil.which
    monkeypatch.setattr(
        sandbox.shutil, "which", lambda name, path=None: None if name == "unshare" else real_which(name, path=path)
    )
    monkeypatch.setattr(sandbox, "_probed", None)
    report = sandbox.isolation(FAST)
    assert report["network"] == "host" and report["pid"] == "host"
    assert report["unshare"] is None and report["private_tmp"] == []
    if os.geteuid() == 0:
        assert report["user"] == "uid 65534"
    contained("import os\ndef f():\n    return os.getuid()\n", test="assert f() == 0\n")
