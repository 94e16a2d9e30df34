"""Resolve what a config calls a model into something `vllm.LLM(model=...)` loads, and make an
8-bit checkpoint of it (`harness quantize`).

Three kinds: a local checkpoint folder, a hub id (left to vLLM and the HF cache), and the
embedded demo models (harness/models/demo.py).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from harness.errors import UsageError
from harness.models.checkpoint import check_weight_files, declared
from harness.models.demo import DEMO_FOLDERS, demo_checkpoint, demo_gguf
from harness.models.destination import (
    check_apart,
    check_out_place,
    check_replaceable,
    describe_out,
    output_folder,
    publish,
    readable_as_usual,
)
from harness.models.quantize import DEFAULT_IGNORE, Built, build_into, check_patterns, check_scheme
from harness.offline import hub_offline


def check_model(model: str, where: str) -> None:
    """Fail fast on a model that cannot load: a missing folder, the demo without its package, or a
    hub id that is not in the Hugging Face cache of an offline machine."""
    try:
        if model in DEMO_FOLDERS:
            demo_gguf()
        elif Path(model).expanduser().exists() or _looks_like_path(model):
            resolve_model(model)
        elif hub_offline() and not _cached_on_hub(model):
            raise UsageError(f"model {model!r}: not in the Hugging Face cache, and offline")
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None


def _cached_on_hub(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") != 1


def resolve_model(model: str) -> str:
    """Return a local path or hub id for vLLM; make the demo checkpoints on first use."""
    if model in DEMO_FOLDERS:
        return str(demo_checkpoint(model))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"model {model!r}: folder has no config.json")
        return str(path.resolve())
    if _looks_like_path(model):
        raise UsageError(f"model {model!r}: no such folder, and not a hub id (org/name)")
    return model


def quantize(model: str, scheme: str, out: Path, ignore: list[str], *, force: bool, command: str) -> Built:
    """Check everything cheap first, build beside `out`, then move it into place.

    Every refusal comes before the build folder exists; a build that fails or is stopped
    leaves --out as it was (a killed one leaves only a hidden `.NAME.*` folder beside it)."""
    name = check_scheme(scheme)
    check_patterns(list(ignore))
    given, out = out, output_folder(out)
    where = describe_out(given, out)
    check_out_place(out, where)
    check_model(model, "MODEL")
    source = source_folder(resolve_model(model))
    check_apart(out, source, where)
    check_replaceable(out, force, where)
    if (already := declared(source / "config.json")) is not None:
        raise UsageError(f"MODEL {model!r}: already quantized ({already.quant_method}); quantize its bf16 source")
    check_weight_files(source)
    start = time.perf_counter()
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as e:
        raise UsageError(f"{where}: cannot make a build folder beside it ({e.strerror or e})") from None
    try:
        readable_as_usual(tmp)
        patterns = [*DEFAULT_IGNORE, *ignore]
        quantized, kept = build_into(source, model, name, patterns, tmp, command)
        seconds = round(time.perf_counter() - start, 1)
        publish(tmp, out, force, where)
    except OSError as e:  # the weights were loaded before: a write failed (disk full, a read-only mount)
        raise UsageError(
            f"{where}: building the checkpoint failed at {e.filename} ({e.strerror or e}); --out is as it was"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return Built(out, name, quantized, patterns, kept, seconds, size)


def source_folder(resolved: str) -> Path:
    """A local folder holding the source checkpoint: a hub id is fetched into (or found in) the HF cache."""
    path = Path(resolved)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(resolved))
    except Exception as e:  # offline and not cached, unknown repo, no access: all bad input here
        raise UsageError(f"MODEL {resolved!r}: cannot fetch it ({type(e).__name__}: {e})") from None
