"""Child processes that run a vLLM engine: the environment they start in, their log and their progress.

A child's stdout and stderr are the variant's log file at the file-descriptor level, so vLLM's
C++ and Triton writes land there with its Python logging, not on the terminal. Progress comes
back on a pipe of its own, one JSON `Event` per line (`progress_channel` is the child's end).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from harness.events import Event

PROGRESS_FD = "HARNESS_PROGRESS_FD"  # the child's end of the progress pipe
STOP_POLL_S = 0.2  # how soon a child whose `stop` is set is ended


def run_in_own_session(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    log: Path | None = None,
    on_event: Callable[[Event], None] | None = None,
    echo: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run argv to its end and return its exit code; nothing it started outlives it.

    vLLM's engine-core and worker processes can outlive a crashed (or interrupted) child and
    keep spinning; in a session of its own the child leads a process group that ends with it.
    log: append the child's stdout and stderr to this file; echo: pass each of its lines on, too.
    on_event: called with each progress event the child sends through `progress_channel`.
    on_event and echo are called from threads of their own.

    Several threads may run children at once: nothing here is shared between calls, and a
    child inherits no other child's pipes (close_fds), so each pipe ends with its own child.
    Ctrl-C reaches only the main thread (the children, in sessions of their own, see none of
    it): a call waiting there is interrupted and ends its child. A call in another thread
    cannot be interrupted; give it `stop`, and set that event to end its child (killed:
    the return code is -9) within STOP_POLL_S.
    """
    env = dict(env) if log is None else logged_env(env)
    pass_fds: tuple[int, ...] = ()
    if on_event is not None:
        read_end, write_end = os.pipe()
        env[PROGRESS_FD], pass_fds = str(write_end), (write_end,)
    out = _open_log(log, argv) if log is not None else None
    tee = out is not None and echo is not None
    try:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            start_new_session=True,
            close_fds=True,  # the default, relied on: another child's pipe end would keep that pipe open
            pass_fds=pass_fds,
            stdout=subprocess.PIPE if tee else out,
            stderr=subprocess.STDOUT if out is not None else None,
        )
    except BaseException:
        if on_event is not None:
            os.close(read_end)
        if out is not None:
            out.close()
        raise
    finally:
        if pass_fds:
            os.close(write_end)  # the child's copy stays open: the pipe ends when the child does
    threads = []
    if on_event is not None:
        threads.append(_start(_read_events, read_end, on_event))
    if tee:
        threads.append(_start(_copy_lines, proc.stdout, out, echo))
    try:
        return _wait(proc, stop)
    finally:
        kill_group(proc.pid)
        if proc.returncode is None:  # interrupted while waiting: reap the killed child
            proc.wait()
        for thread in threads:  # the group is gone, so its pipes are at their end
            thread.join(timeout=5)
        if out is not None:
            out.close()


def _wait(proc: subprocess.Popen[bytes], stop: threading.Event | None) -> int:
    if stop is None:
        return proc.wait()
    while not stop.is_set():
        try:
            return proc.wait(timeout=STOP_POLL_S)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc.pid)
    return proc.wait()


def logged_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a child whose output is a log file.

    Its progress comes back as events, so tqdm bars (lm-eval's, vLLM's) would only fill the log
    with carriage returns; unbuffered Python keeps its lines in order with the C-level writes.
    """
    return {"TQDM_DISABLE": "1", **env, "PYTHONUNBUFFERED": "1"}


def _open_log(path: Path, argv: Sequence[str]) -> BinaryIO:
    """Appended to: a resumed run's log follows the interrupted one's, after a line naming the command."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = path.open("ab")
    out.write(f"===== {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC: {shlex.join(argv)}\n".encode())
    out.flush()
    return out


def _start(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _read_events(fd: int, on_event: Callable[[Event], None]) -> None:
    with open(fd, encoding="utf-8", errors="replace") as pipe:
        for line in pipe:
            if (event := Event.from_json(line)) is not None:
                on_event(event)


def _copy_lines(pipe: BinaryIO, out: BinaryIO, echo: Callable[[str], None]) -> None:
    """The child's output into its log as written, and each line to `echo` as the last state of a bar."""
    for raw in pipe:
        out.write(raw)
        out.flush()
        text = raw.decode("utf-8", errors="replace").rstrip("\n").rsplit("\r", 1)[-1]
        echo(text)


def progress_channel() -> Callable[[Event], None]:
    """The child's end of the progress pipe: sends each event as one line; a no-op when not started by a runner.

    Taken out of the environment and not inherited, so no process this child starts writes to it.
    """
    fd = os.environ.pop(PROGRESS_FD, None)
    if fd is None:
        return lambda event: None
    os.set_inheritable(int(fd), False)
    pipe = open(int(fd), "w", encoding="utf-8", buffering=1)

    def send(event: Event) -> None:
        try:
            pipe.write(event.to_json() + "\n")
        except BrokenPipeError:  # the runner is gone; this process follows it shortly
            pass

    return send


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group ended on its own
