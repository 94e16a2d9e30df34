"""What `harness run` prints, and where the engines' own output goes, without an engine.

The end-to-end proof (a real run's captured output holds no vLLM lines; each variant's log.txt
does) is in test_demo_run.py.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console
from runfixtures import AnswersEachChunk

from harness.cli import build_parser
from harness.logs import log_to_file, setup_logging
from harness.render.progress import (
    PLAIN_INTERVAL_S,
    Event,
    LiveDisplay,
    Pace,
    PlainDisplay,
    display_for,
    summary,
)
from harness.results.schema import LinearScheme, Manifest, Quantization
from harness.run import children
from harness.run.answers import RecordedLM
from harness.run.worker import _announce_steps

BAR_CHARACTERS = set("━╸█▏▎▍▌▋▊▉|\r\x1b")


def plain(events: list[tuple[float, Event]]) -> list[str]:
    """The plain lines a variant's events make, each reached at its time."""
    out = io.StringIO()
    display = PlainDisplay(out)
    display.begin("[1/2] bf16")
    for at, event in events:
        display.update(replace(event, at=at))
    display.end("complete in 9 s")
    return out.getvalue().splitlines()


def test_plain_lines_name_each_phase_once_and_count_requests_with_rate_and_eta():
    lines = plain(
        [
            (0, Event("engine", "SmolLM2")),
            (20, Event("tasks", "llama3_arc_challenge", 1, 2)),
            (21, Event("tasks", "llama3_gsm8k_cot", 2, 2)),
            (22, Event("build", "llama3_arc_challenge", 1, 3)),
            (22.5, Event("build", "llama3_boolq", 2, 3)),  # same phase, too soon: not printed
            (23, Event("build", "llama3_gsm8k_cot", 3, 3)),  # the phase's last step: printed
            (30, Event("requests", "loglikelihood", 0, 100)),
            (40, Event("requests", "loglikelihood", 50, 100)),  # 5/s, 10 s left
            (45, Event("requests", "loglikelihood", 75, 100)),  # within PLAIN_INTERVAL_S: skipped
            (50, Event("requests", "loglikelihood", 100, 100)),
            (50, Event("requests", "generate_until", 0, 4)),
            (58, Event("requests", "generate_until", 4, 4)),
            (58, Event("scoring", "llama3_arc_challenge", 1, 2)),
        ]
    )
    assert lines == [
        "[1/2] bf16: starting engine: SmolLM2",
        "[1/2] bf16: loading tasks: llama3_arc_challenge 1/2",
        "[1/2] bf16: loading tasks: llama3_gsm8k_cot 2/2",
        "[1/2] bf16: building requests: llama3_arc_challenge 1/3",
        "[1/2] bf16: building requests: llama3_gsm8k_cot 3/3",
        "[1/2] bf16: loglikelihood requests 0/100",
        "[1/2] bf16: loglikelihood requests 50/100 (5.0/s, ETA 10 s)",
        "[1/2] bf16: loglikelihood requests 100/100 (5.0/s)",
        "[1/2] bf16: generate_until requests 0/4",
        "[1/2] bf16: generate_until requests 4/4 (2 s each)",
        "[1/2] bf16: filters and metrics: llama3_arc_challenge 1/2",
        "[1/2] bf16: complete in 9 s",
    ]
    assert not BAR_CHARACTERS & set("".join(lines))


def test_a_long_request_phase_prints_its_count_every_interval_in_a_log():
    events = [(t, Event("requests", "generate_until", t, 1000)) for t in range(0, 60, 2)]
    lines = plain(events)
    counts = [line for line in lines if "generate_until" in line]
    assert len(counts) == 1 + int(58 // PLAIN_INTERVAL_S)  # the first, then one per interval


def test_pace_is_the_rate_of_the_current_request_kind_by_the_workers_clock():
    pace = Pace()
    assert pace.observe(Event("requests", "loglikelihood", 0, 1000, at=100)) == ""
    assert pace.observe(Event("requests", "loglikelihood", 100, 1000, at=110)) == "10.0/s, ETA 1 min 30 s"
    assert pace.observe(Event("requests", "generate_until", 0, 10, at=120)) == ""  # a new kind, a new start
    assert pace.observe(Event("requests", "generate_until", 10, 10, at=125)) == "2.0/s"
    assert pace.observe(Event("build", "arc", 1, 2, at=126)) == ""  # counts of tasks, not requests: no rate


def test_events_cross_a_pipe_as_json_lines_and_half_a_line_is_dropped():
    event = Event("requests", "generate_until", 3, 8)
    assert Event.from_json(event.to_json()) == event
    assert Event.from_json(event.to_json()[:-5]) is None
    assert Event.from_json('["not", "an", "event"]') is None
    assert Event.from_json('{"phase": "engine", "unknown": 1}') is None


def test_summary_gives_time_throughput_and_quantized_layers_or_the_error_and_log(tmp_path):
    log = tmp_path / "fp8" / "log.txt"
    done = Manifest(
        variant="fp8",
        outcome={"status": "complete"},
        statistics={"timings": {"engine_start_s": 18.4, "total_s": 64.0}, "throughput": {"tokens_per_s": 1234.5}},
        engine={"quantization": Quantization(linear_layers=120, quantized_layers=120)},
    )
    assert summary(done, 64.2, log) == (
        "complete in 1 min 04 s (engine start 18 s); 1,234 tokens/s; 120 of 120 linear layers quantized"
    )
    int8 = LinearScheme(method="M", kernel="CPUInt8ScaledMMLinearKernel", path="onednn", weight_bits=8, layers=120)
    done.engine.quantization = Quantization(linear_layers=121, quantized_layers=120, schemes=[int8])
    assert summary(done, 64.2, log).endswith(
        "121 linear layers quantized (CPUInt8ScaledMMLinearKernel/onednn)"
    ) and "; 120 of 121" in summary(done, 64.2, log)
    failed = Manifest(
        variant="fp8", outcome={"status": "failed", "error": "RuntimeError: engine start failed\n  for /x"}
    )
    assert summary(failed, 5, log) == f"FAILED after 5 s: RuntimeError: engine start failed for /x; full log: {log}"
    assert summary(None, 1, log).endswith(f"full log: {log}")


def test_live_display_draws_a_bar_then_leaves_only_the_summary_line():
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, force_terminal=True, width=120))
    display.begin("[1/2] bf16")
    display.update(Event("requests", "loglikelihood", 3, 8))
    display.progress.refresh()
    display.echo("INFO a line of the engine's log")
    display.end("complete in 3 s")
    display.close()
    text = out.getvalue()
    assert "loglikelihood requests" in text and "3/8" in text and "━" in text
    assert "INFO a line of the engine's log\n" in text
    assert text.endswith("[1/2] bf16: complete in 3 s\n")


def test_variants_running_at_once_in_a_log_each_keep_their_own_lines_and_interval():
    out = io.StringIO()
    display = PlainDisplay(out)
    labels = {"bf16": "[1/2] bf16", "fp8": "[2/2] fp8"}
    steps = threading.Barrier(2)

    def variant(key: str) -> None:
        display.begin(labels[key], key=key)
        for t in range(0, 60, 2):  # both report at the same moments, so their lines interleave
            steps.wait()
            display.update(Event("requests", "generate_until", t, 1000, at=t), key=key)
        steps.wait()
        display.end(f"complete in {len(key)} s", key=key)
        display.update(Event("scoring", "late", at=99), key=key)  # after its end: dropped

    threads = [threading.Thread(target=variant, args=(key,)) for key in labels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = out.getvalue().splitlines()
    for key, label in labels.items():
        own = [line for line in lines if line.startswith(f"{label}: ")]
        counts = [line for line in own if "generate_until" in line]
        assert len(counts) == 1 + int(58 // PLAIN_INTERVAL_S)  # each variant's own interval
        assert counts[0] == f"{label}: generate_until requests 0/1000"
        assert own[-1] == f"{label}: complete in {len(key)} s" and sum("complete" in line for line in own) == 1
    assert all(line.startswith(tuple(f"{label}: " for label in labels.values())) for line in lines)
    assert any(a.startswith("[1/2]") and b.startswith("[2/2]") for a, b in zip(lines, lines[1:]))  # interleaved
    assert any(a.startswith("[2/2]") and b.startswith("[1/2]") for a, b in zip(lines, lines[1:]))
    assert not BAR_CHARACTERS & set("".join(lines))


def test_echo_with_a_key_names_the_variant():
    out = io.StringIO()
    display = PlainDisplay(out)
    display.begin("[1/2] bf16", key="bf16")
    display.echo("INFO engine line", key="bf16")
    display.echo("a line of no variant")
    assert out.getvalue().splitlines() == ["[1/2] bf16: INFO engine line", "a line of no variant"]


def test_live_display_shows_a_line_per_running_variant_each_in_its_place():
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, force_terminal=True, width=120))
    display.begin("[1/2] bf16", key="bf16")
    display.begin("[2/2] fp8", key="fp8")
    display.update(Event("requests", "loglikelihood", 3, 8), key="bf16")
    display.update(Event("engine", "SmolLM2"), key="fp8")
    display.update(Event("requests", "generate_until", 5, 10), key="fp8")
    display.progress.refresh()
    descriptions = [task.description for task in display.progress.tasks]
    assert descriptions == ["[1/2] bf16: loglikelihood requests", "[2/2] fp8: generate_until requests"]
    [bf16, fp8] = display.progress.tasks
    assert (bf16.completed, bf16.total, fp8.completed, fp8.total) == (3, 8, 5, 10)
    text = out.getvalue()
    assert "[1/2] bf16: loglikelihood requests" in text and "3/8" in text
    assert "[2/2] fp8: generate_until requests" in text and "5/10" in text
    display.update(Event("scoring", "arc"), key="bf16")  # a phase with no count: no bar any more
    assert display.progress.tasks[0].total is None and display.progress.tasks[0].description.startswith("[1/2]")
    display.end("complete in 3 s", key="bf16")
    assert display.progress.live.is_started  # fp8 still runs
    assert [task.description for task in display.progress.tasks] == ["[2/2] fp8: generate_until requests"]
    assert "[1/2] bf16: complete in 3 s\n" in out.getvalue()
    display.update(Event("requests", "generate_until", 10, 10), key="fp8")
    display.end("FAILED after 4 s: boom", key="fp8")
    assert not display.progress.live.is_started
    display.close()
    assert out.getvalue().endswith("[2/2] fp8: FAILED after 4 s: boom\n")


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_bars_only_on_a_terminal_even_when_ci_forces_colour(monkeypatch):
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert isinstance(display_for(Stream(tty=False)), PlainDisplay)
    monkeypatch.delenv("FORCE_COLOR")
    assert isinstance(display_for(Stream(tty=True)), LiveDisplay)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(display_for(Stream(tty=True)), PlainDisplay)


CHILD = textwrap.dedent(
    """
    import logging, os, sys
    from harness.run.children import progress_channel
    from harness.logs import setup_logging
    from harness.events import Event

    setup_logging(verbose=True)
    send = progress_channel()
    assert "HARNESS_PROGRESS_FD" not in os.environ  # what this child starts cannot write to it
    send(Event("engine", "m"))
    os.write(1, b"[W1129 C++ warning on fd 1]\\n")
    os.write(2, b"C-level stderr\\n")
    print("python stdout")
    logging.getLogger("vllm.engine").warning("a vLLM warning")
    send(Event("requests", "loglikelihood", 2, 2))
    sys.exit(3)
    """
)


def test_a_childs_output_goes_to_its_log_at_fd_level_and_its_events_come_back(tmp_path, capfd):
    log = tmp_path / "bf16" / "log.txt"
    events: list[Event] = []
    code = children.run_in_own_session([sys.executable, "-c", CHILD], dict(os.environ), log=log, on_event=events.append)
    assert code == 3
    assert events == [Event("engine", "m"), Event("requests", "loglikelihood", 2, 2)]
    text = log.read_text()
    for line in (
        "[W1129 C++ warning on fd 1]",
        "C-level stderr",
        "python stdout",
        "vllm.engine WARNING a vLLM warning",
    ):
        assert line in text
    assert text.startswith("===== ") and "-c" in text.splitlines()[0]  # what ran, and when
    out, err = capfd.readouterr()
    assert out == err == ""


def test_verbose_echoes_each_line_of_the_log_as_it_is_written(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("an earlier run's log\n")
    echoed: list[str] = []
    script = "import os, sys; os.write(2, b'one\\n'); sys.stdout.write('bar 50%\\rbar 100%\\n')"
    assert (
        children.run_in_own_session([sys.executable, "-c", script], dict(os.environ), log=log, echo=echoed.append) == 0
    )
    assert echoed == ["one", "bar 100%"]
    assert log.read_text().startswith("an earlier run's log\n=====")  # appended: a resumed run keeps it
    assert log.read_bytes().endswith(b"one\nbar 50%\rbar 100%\n")  # the log keeps what was written


# A stand-in worker: reports its name, waits until the file argv[2] exists (if one is named),
# reports a request count, and exits with code argv[3].
GATED_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from harness.run.children import progress_channel
    from harness.events import Event

    name, gate, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
    send = progress_channel()
    send(Event("engine", name))
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
    send(Event("requests", name, 1, 1))
    sys.exit(code)
    """
)


def test_children_run_from_two_threads_at_once_each_report_to_their_own_callback(tmp_path):
    """fp8's child starts once bf16's runs, bf16's ends while fp8's still runs: each pipe is its own."""
    fp8_started, fp8_may_end = tmp_path / "fp8-started", tmp_path / "fp8-may-end"
    events: dict[str, list[Event]] = {"bf16": [], "fp8": []}
    codes: dict[str, int] = {}
    took: dict[str, float] = {}

    def on_fp8(event: Event) -> None:
        events["fp8"].append(event)
        fp8_started.touch()

    def run(name: str, gate: Path, code: int, on_event) -> None:
        start = time.monotonic()
        argv = [sys.executable, "-c", GATED_CHILD, name, str(gate), str(code)]
        codes[name] = children.run_in_own_session(
            argv, dict(os.environ), log=tmp_path / name / "log.txt", on_event=on_event
        )
        took[name] = time.monotonic() - start

    bf16 = threading.Thread(target=run, args=("bf16", fp8_started, 3, events["bf16"].append))
    fp8 = threading.Thread(target=run, args=("fp8", fp8_may_end, 5, on_fp8))
    bf16.start()
    fp8.start()
    bf16.join(timeout=60)
    assert not bf16.is_alive() and fp8.is_alive()  # bf16 returned while fp8's child runs
    assert took["bf16"] < 5  # no other child held its pipe open until the reader's 5 s timeout
    fp8_may_end.touch()
    fp8.join(timeout=60)
    assert codes == {"bf16": 3, "fp8": 5}
    for name in ("bf16", "fp8"):
        assert events[name] == [Event("engine", name), Event("requests", name, 1, 1)]


def test_stop_ends_children_waited_on_in_other_threads(tmp_path):
    """Ctrl-C reaches only the main thread; a runner sets `stop` to end children run from threads."""
    stop = threading.Event()
    script = "import time; from harness.run.children import progress_channel; from harness.events "
    script += "import Event; progress_channel()(Event('engine', 'up')); time.sleep(60)"
    started = threading.Semaphore(0)
    codes: list[int] = []

    def run() -> None:
        codes.append(
            children.run_in_own_session(
                [sys.executable, "-c", script], dict(os.environ), on_event=lambda e: started.release(), stop=stop
            )
        )

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert started.acquire(timeout=60) and started.acquire(timeout=60)  # both children run
    start = time.monotonic()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert codes == [-9, -9] and time.monotonic() - start < 5


def test_terminal_shows_the_harness_and_errors_of_other_libraries_unless_verbose(capsys):
    setup_logging()
    logging.getLogger("harness.run").info("ours")
    logging.getLogger("vllm.triton_utils.importing").warning("Triton is installed, but")
    logging.getLogger("lm_eval.evaluator").info("Building contexts")
    logging.getLogger("a_library").error("cannot load")
    err = capsys.readouterr().err
    assert "ours" in err and "cannot load" in err
    assert "Triton" not in err and "Building contexts" not in err
    setup_logging(verbose=True)
    logging.getLogger("vllm.triton_utils.importing").warning("Triton is installed, but")
    assert "Triton" in capsys.readouterr().err
    setup_logging()


def test_log_to_file_takes_library_logs_and_stderr_bars_off_the_terminal(tmp_path, capsys):
    setup_logging()
    path = tmp_path / "bf16" / "log.txt"
    with log_to_file(path, "harness rescore"):
        logging.getLogger("lm_eval.api.task").info("Building contexts for arc")
        print("100%|██████████| 2/2", file=sys.stderr)
    assert capsys.readouterr().err == ""
    text = path.read_text()
    assert "harness rescore" in text and "Building contexts for arc" in text and "2/2" in text


def test_recorded_requests_report_true_counts_per_chunk(tmp_path):
    class Echo(AnswersEachChunk):
        def loglikelihood(self, requests):
            return [(-1.0, True) for _ in requests]

    events: list[Event] = []
    lm = RecordedLM(Echo(), tmp_path / "r.sqlite", chunk_requests=3, progress=events.append)  # type: ignore[arg-type]
    reqs = [SimpleNamespace(args=(f"q{i}", " A")) for i in range(7)]
    lm.loglikelihood(reqs)
    assert [(e.done, e.total) for e in events] == [(0, 7), (3, 7), (6, 7), (7, 7)]
    events.clear()
    lm.loglikelihood(reqs)  # answered from the database: all done before the engine is asked anything
    assert [(e.done, e.total) for e in events] == [(7, 7)]


def test_each_task_is_announced_as_lm_eval_builds_and_scores_it():
    class Task:
        def __init__(self):
            self.calls: list[str] = []

        def build_all_requests(self, **kwargs):
            self.calls.append(f"build {kwargs}")

        def apply_filters(self):
            self.calls.append("filters")

    leaves = {"arc": Task(), "gsm8k": Task()}
    events: list[Event] = []
    _announce_steps(leaves, events.append)
    for task in leaves.values():
        task.build_all_requests(limit=2)
    for task in leaves.values():
        task.apply_filters()
    assert events == [
        Event("build", "arc", 1, 2),
        Event("build", "gsm8k", 2, 2),
        Event("scoring", "arc", 1, 2),
        Event("scoring", "gsm8k", 2, 2),
    ]
    assert leaves["arc"].calls == ["build {'limit': 2}", "filters"]  # lm-eval's own methods still run


def test_run_takes_verbose():
    parser = build_parser()
    assert parser.parse_args(["run", "-v"]).verbose and not parser.parse_args(["run"]).verbose
