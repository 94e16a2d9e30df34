"""What a checkpoint folder says about itself, read from its files without loading weights:
the quantization its config.json declares, and what decides its token ids.

A checkpoint is a model's weights and config on disk (a local folder, or a hub id through the
Hugging Face cache).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from harness.errors import UsageError, one_line
from harness.results.schema import CheckpointQuantization, QuantArgs, SchemeGroup, first_problem


def model_file(model_path: str, name: str) -> Path | None:
    """One file of a resolved model (a folder, or a hub id through the HF cache); None if it has none."""
    path = Path(model_path)
    if path.is_dir():
        return path / name if (path / name).is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(model_path, name))
    except EntryNotFoundError:
        return None


def declared(config_file: Path | None) -> CheckpointQuantization | None:
    """The `quantization_config` a checkpoint's config.json declares, or None (plain weights)."""
    if config_file is None:
        return None
    try:
        config = json.loads(config_file.read_text()).get("quantization_config")
    except (OSError, ValueError, AttributeError) as e:
        raise UsageError(f"{config_file}: unreadable model config ({e})") from None
    if config is None:
        return None
    if not isinstance(config, dict):
        raise UsageError(f"{config_file}: quantization_config is a {type(config).__name__}, not a mapping")
    try:
        return _quantization(config)
    except ValidationError as e:
        raise UsageError(f"{config_file}: quantization_config is malformed ({first_problem(e)})") from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"{config_file}: quantization_config is malformed ({one_line(e)})") from None


def _quantization(config: dict) -> CheckpointQuantization:
    if not isinstance(config.get("quant_method"), str):
        raise ValueError("no quant_method: vLLM picks the method by it")
    groups = {}
    for name, group in _mapping(config.get("config_groups") or {}, "config_groups").items():
        group = _mapping(group, f"config_groups.{name}")
        groups[name] = SchemeGroup(
            targets=_names(group.get("targets"), f"config_groups.{name}.targets"),
            weights=_args(group.get("weights")),
            input_activations=_args(group.get("input_activations")),
        )
    # compressed-tensors: `ignore`; vLLM's fp8 and others: `ignored_layers` / `modules_to_not_convert`.
    ignore = config.get("ignore") or config.get("ignored_layers") or config.get("modules_to_not_convert")
    settings: dict[str, str | int | float | bool | None] = {
        str(k): v
        for k, v in config.items()
        if k not in ("quant_method", "format", "config_groups", "ignore") and isinstance(v, str | int | float | bool)
    }
    return CheckpointQuantization(
        quant_method=config.get("quant_method"),
        format=config.get("format"),
        groups=groups,
        ignore=_names(ignore, "ignore"),
        settings=settings,
    )


def check_weight_files(folder: Path) -> None:
    """Each safetensors file must be as long as its header says: a truncated copy (a download or
    a copy cut short) is named here, not as a loader's error halfway through a build."""
    for path in sorted(folder.glob("*.safetensors")):
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                header_size = int.from_bytes(f.read(8), "little")
                if header_size > size - 8:
                    raise ValueError(f"its header says {header_size} bytes of metadata, the file has {size}")
                header = json.loads(f.read(header_size))
            ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
            raise UsageError(f"{path}: not a readable safetensors file ({one_line(e)})") from None
        expected = 8 + header_size + max(ends, default=0)
        if size != expected:
            raise UsageError(f"{path}: {size} bytes, its header describes {expected}: truncated or damaged")


def _mapping(value: object, key: str) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{key} is not a mapping: {value!r:.80}")
    return value


def _names(value: object, key: str) -> list[str]:
    """A list of module names or patterns; a lone string would otherwise read as its letters."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} is not a list of names: {value!r:.80}")
    return value


def _args(args: object) -> QuantArgs | None:
    if args is None:
        return None
    if not isinstance(args, dict):
        raise TypeError(f"quantization arguments are not a mapping: {args!r:.80}")
    return QuantArgs(**{k: args[k] for k in QuantArgs.model_fields if args.get(k) is not None})


def tokenizer_identity(model_path: str) -> dict[str, object]:
    """What decides a checkpoint's token ids, cheaply (no tokenizer object is built).

    Two variants whose identities differ see different token ids for the same prompt, so
    their per-sample answers and log-probabilities cannot be compared.
    """
    identity: dict[str, object] = {}
    if (config := model_file(model_path, "config.json")) is not None:
        identity["vocab_size"] = _json(config).get("vocab_size")
    if (fast := model_file(model_path, "tokenizer.json")) is not None:
        tokenizer = _json(fast)
        vocab = (tokenizer.get("model") or {}).get("vocab")
        added = [[t.get("id"), t.get("content"), t.get("special")] for t in tokenizer.get("added_tokens") or []]
        identity["vocabulary"] = _digest([vocab, added])
    else:  # slow tokenizers: their vocabulary files as they are
        files = [f for name in _SLOW_VOCAB_FILES if (f := model_file(model_path, name)) is not None]
        identity["vocabulary"] = _digest([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    if (settings := model_file(model_path, "tokenizer_config.json")) is not None:
        special = _json(settings)
        identity["special tokens"] = _digest([special.get(k) for k in ("bos_token", "eos_token", "pad_token")])
    return identity


_SLOW_VOCAB_FILES = ("vocab.json", "merges.txt", "tokenizer.model", "vocab.txt", "spiece.model")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a JSON object")
    return data


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
