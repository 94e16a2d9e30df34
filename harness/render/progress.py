"""What `harness run` shows while its variants run: a header, one live line per variant, a summary.

Each variant's worker reports `Event`s (harness.run.children carries them over a pipe); a
`Display` turns them into text. On a terminal the line is a rich progress bar (phase, done/total,
rate, ETA) that the variant's one-line summary replaces when it ends. Anywhere else (CI logs,
pipes, files) every phase is one plain line, and a request count at most every PLAIN_INTERVAL_S
seconds: no bars, no carriage returns. Variants that run at once each have a line of their own
(a key per variant), and each plain line starts with its variant's label. The engines' and lm-eval's own output never comes here:
it goes to <variant>/log.txt, and to `echo` only with `harness run -v`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from harness.events import Event
from harness.results.schema import COMPLETE, Manifest

PLAIN_INTERVAL_S = 10.0  # a long request phase prints its count this often in a CI log


class Pace:
    """Rate and time left of the current request phase, from the counts the worker reported."""

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.start = 0.0
        self.done_at_start = 0

    def observe(self, event: Event) -> str:
        """'12.5/s, ETA 40 s' (or '3 s each') for request counts once some are done; '' otherwise."""
        if (event.phase, event.detail) != self.key:
            self.key, self.start, self.done_at_start = (event.phase, event.detail), event.at, event.done or 0
        if event.phase != "requests" or event.done is None or event.total is None:
            return ""
        elapsed, done = event.at - self.start, event.done - self.done_at_start
        if elapsed <= 0 or done <= 0:
            return ""
        rate = done / elapsed
        speed = f"{rate:.1f}/s" if rate >= 1 else f"{duration(1 / rate)} each"
        left = (event.total - event.done) / rate
        return f"{speed}, ETA {duration(left)}" if event.done < event.total else speed


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def summary(manifest: Manifest | None, seconds: float, log: Path) -> str:
    """The variant in one line: time, engine start, tokens/s, quantized layers; or why it failed and where its log is."""
    if manifest is None:
        return f"FAILED after {duration(seconds)}: no manifest written; full log: {log}"
    if manifest.status != COMPLETE:
        error = " ".join((manifest.outcome.error or "unknown error").split())
        return f"FAILED after {duration(seconds)}: {error}; full log: {log}"
    head = f"complete in {duration(seconds)}"
    if (start := manifest.statistics.timings.engine_start_s) is not None:
        head += f" (engine start {duration(start)})"
    parts = [head]
    if (rate := manifest.statistics.throughput.tokens_per_s) is not None:
        parts.append(f"{rate:,.0f} tokens/s")
    q = manifest.engine.quantization
    if q.linear_layers is not None:
        kernels = [s.kernel + (f"/{s.path}" if s.path else "") for s in q.schemes if s.kernel and s.weight_bits == 8]
        via = f" ({', '.join(kernels)})" if kernels else ""
        parts.append(f"{q.quantized_layers} of {q.linear_layers} linear layers quantized{via}")
    return "; ".join(parts)


@dataclass
class _Variant:
    """What a display keeps about one live variant."""

    label: str
    pace: Pace = field(default_factory=Pace)
    phase: tuple[str, str] | None = None  # the (phase, request kind) shown last
    shown_at: float = 0.0  # when PlainDisplay last printed it (the worker's clock)
    task: TaskID | None = None  # LiveDisplay's line for it


class Display(ABC):
    """Where a run's progress goes: several variants can be live at once, each under its own key.

    begin/update/end take the variant's key: the same key for all of one variant's calls, any
    hashable (the runner uses the variant's name). Without a key they concern the one current
    variant, as when variants run one after another. Every method may be called from any thread:
    each takes the display's lock, so one variant's calls never interleave with another's halfway.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.variants: dict[Hashable | None, _Variant] = {}

    @abstractmethod
    def line(self, text: str) -> None:
        """A line of its own: the header, a note."""

    @abstractmethod
    def begin(self, label: str, key: Hashable | None = None) -> None:
        """A variant starts; its events follow. A key that is live already starts over."""

    @abstractmethod
    def update(self, event: Event, key: Hashable | None = None) -> None:
        """The variant's worker reached `event`; events of a key that has ended are dropped."""

    @abstractmethod
    def end(self, text: str, key: Hashable | None = None) -> None:
        """The variant's summary line replaces its progress."""

    @abstractmethod
    def echo(self, text: str, key: Hashable | None = None) -> None:
        """One line of the engine's log (`harness run -v`); with a key, after the variant's label."""

    @abstractmethod
    def close(self) -> None:
        """Leave the terminal as it was (also after Ctrl-C)."""

    def _ending(self, key: Hashable | None) -> _Variant:
        """The variant `end` is about. Without a key the last one's label stays, as it always has."""
        if key is None:
            return self.variants.setdefault(None, _Variant(""))
        return self.variants.pop(key, None) or _Variant(str(key))  # a summary is never lost

    def _prefixed(self, text: str, key: Hashable | None) -> str:
        if key is None:
            return text
        variant = self.variants.get(key)
        return f"{variant.label if variant is not None else key}: {text}"


class PlainDisplay(Display):
    """Plain lines for logs and pipes: one per phase, request counts at most every PLAIN_INTERVAL_S.

    Every line about a variant starts with its label, so the lines of variants running at once
    can be told apart however they interleave; each variant has its own PLAIN_INTERVAL_S.
    """

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream

    def line(self, text: str) -> None:
        with self.lock:
            print(text, file=self.stream, flush=True)

    def begin(self, label: str, key: Hashable | None = None) -> None:
        with self.lock:
            self.variants[key] = _Variant(label)

    def update(self, event: Event, key: Hashable | None = None) -> None:
        with self.lock:
            variant = self.variants.get(key)
            if variant is None:
                if key is not None:
                    return  # ended already (or never begun)
                variant = self.variants[None] = _Variant("")
            pace = variant.pace.observe(event)
            # Request counts per request kind; other phases once per phase (not per task: a suite
            # has dozens), then every PLAIN_INTERVAL_S, and their last step.
            phase = (event.phase, event.detail if event.phase == "requests" else "")
            last = event.done is not None and event.done == event.total
            if phase == variant.phase and not last and event.at - variant.shown_at < PLAIN_INTERVAL_S:
                return
            variant.phase, variant.shown_at = phase, event.at
            text = " ".join(filter(None, [event.what(), event.counts()]))
            self.line(f"{variant.label}: {text}" + (f" ({pace})" if pace else ""))

    def end(self, text: str, key: Hashable | None = None) -> None:
        with self.lock:
            self.line(f"{self._ending(key).label}: {text}")

    def echo(self, text: str, key: Hashable | None = None) -> None:
        with self.lock:
            self.line(self._prefixed(text, key))

    def close(self) -> None:
        pass  # every line is whole already


class LiveDisplay(Display):
    """One rich progress line per running variant on a terminal, each replaced by its summary.

    The lines keep their order (the order the variants began in) while they run; a summary is
    printed above the lines still running.
    """

    def __init__(self, console: Console):
        super().__init__()
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[pace]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )

    def line(self, text: str) -> None:
        with self.lock:
            self.console.print(text, markup=False, highlight=False)

    def begin(self, label: str, key: Hashable | None = None) -> None:
        with self.lock:
            if (old := self.variants.get(key)) is not None and old.task is not None:
                self.progress.remove_task(old.task)
            variant = self.variants[key] = _Variant(label)
            self.progress.start()
            variant.task = self.progress.add_task(f"{label}: starting", total=None, counts="", pace="")

    def update(self, event: Event, key: Hashable | None = None) -> None:
        with self.lock:
            variant = self.variants.get(key)
            if variant is None or variant.task is None:
                return
            description, pace = f"{variant.label}: {event.what()}", variant.pace.observe(event)
            phase = (event.phase, event.detail if event.phase == "requests" else "")
            if phase != variant.phase:
                # A new phase starts the line over: its own total (None: no bar), spinner and
                # elapsed time. An update cannot take a total away, so it is set on the task;
                # reset also makes a finished task unfinished. The line keeps its place.
                variant.phase = phase
                for task in self.progress.tasks:
                    if task.id == variant.task:
                        task.total = event.total
                self.progress.reset(variant.task, total=event.total, description=description, counts="", pace="")
            self.progress.update(
                variant.task, description=description, completed=event.done or 0, counts=event.counts(), pace=pace
            )

    def end(self, text: str, key: Hashable | None = None) -> None:
        with self.lock:
            variant = self._ending(key)
            if variant.task is not None:
                self.progress.remove_task(variant.task)
                variant.task = None
            if all(v.task is None for v in self.variants.values()):
                self.progress.stop()
            self.line(f"{variant.label}: {text}")

    def echo(self, text: str, key: Hashable | None = None) -> None:
        with self.lock:
            self.progress.console.print(self._prefixed(text, key), markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        with self.lock:
            self.progress.stop()


def display_for(stream: TextIO) -> Display:
    """Live progress on a terminal, plain lines elsewhere.

    A terminal is what isatty() says, not an environment variable: FORCE_COLOR, which some CI
    systems set, must not put bars into a log. TTY_COMPATIBLE=0 and TERM=dumb turn bars off.
    """
    console = Console(file=stream)
    if stream.isatty() and console.is_terminal and not console.is_dumb_terminal:
        return LiveDisplay(console)
    return PlainDisplay(stream)
