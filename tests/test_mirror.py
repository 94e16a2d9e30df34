"""harness.suites.mirror: a mirror load returns what the files hold now, or a one-line error.

Model-free; real ``datasets`` on copies of tasks/samples in tmp folders, with a fresh, empty
datasets cache per test so a warm cache cannot hide a bug.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from benchdata import HUB, needs_mirror

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from harness.suites import digests, mirror
from harness.suites.mirror import CorruptMirrorError, MirrorError

SAMPLES = Path(__file__).resolve().parent.parent / "tasks" / "samples"
ARC, WINO = "allenai/ai2_arc", "allenai/winogrande"


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """An empty datasets cache, HF home and digest cache for each test (datasets reads the env at
    import, so its config attribute is pointed there too)."""
    import datasets

    cache = tmp_path / "hf" / "datasets"
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "harness"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    datasets.disable_progress_bars()
    return cache


def copy_sample(tmp_path: Path, dataset: str, under: str = "mirror") -> Path:
    dst = tmp_path / under / dataset
    shutil.copytree(SAMPLES / dataset, dst)
    return dst


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_rows(path: Path, items: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))


def to_parquet(folder: Path, config: str) -> None:
    """Turn a samples config into parquet files (the format of pulled / hub mirrors)."""
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    for f in sorted((folder / config).glob("*.jsonl")):
        pq.write_table(pajson.read_json(f), f.with_suffix(".parquet"))
        f.unlink()
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace(".jsonl", ".parquet"))


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- loads follow the files


def test_load_returns_what_load_dataset_would(tmp_path):
    """Same shape lm-eval's Task.download gets from load_dataset(path, name)."""
    import datasets

    folder = copy_sample(tmp_path, ARC)
    dd = mirror.load_mirror(folder, name="ARC-Challenge")
    assert isinstance(dd, datasets.DatasetDict)
    assert {k: v.num_rows for k, v in dd.items()} == {"train": 26, "validation": 5, "test": 10}
    assert set(dd["test"].features) == {"id", "question", "choices", "answerKey"}
    assert dd["test"].to_list() == rows(folder / "ARC-Challenge" / "test.jsonl")
    one = mirror.load_split(folder, "ARC-Challenge", "validation")
    assert isinstance(one, datasets.Dataset) and one.num_rows == 5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_changed_file_changes_what_is_loaded(tmp_path, fmt):
    """The issue's case: a test file rewritten to 5 rows with other answers must load as such,
    even with the old copy in the (same) cache and the old mtime put back."""
    folder = copy_sample(tmp_path, ARC)
    if fmt == "parquet":
        to_parquet(folder, "ARC-Challenge")
    test_file = folder / "ARC-Challenge" / f"test.{fmt}"
    before = mirror.load_mirror(folder, "ARC-Challenge")["test"]
    assert before.num_rows == 10

    changed = before.to_list()[:5]
    for r in changed:
        r["answerKey"] = "E" if r["answerKey"] != "E" else "A"
    stat = test_file.stat()
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(changed, schema=before.data.schema), test_file)
    else:
        write_rows(test_file, changed)
    os.utime(test_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime cannot be the key

    after = mirror.load_mirror(folder, "ARC-Challenge")["test"]
    assert after.num_rows == 5
    assert after["answerKey"] == [r["answerKey"] for r in changed]
    assert after["answerKey"] != before["answerKey"][:5]
    assert after._fingerprint != before._fingerprint


def test_same_named_folder_elsewhere_does_not_answer(tmp_path):
    """datasets keys its cache by folder basename + README: another `winogrande` folder whose
    validation file holds train rows must not be what this one's validation serves."""
    other = copy_sample(tmp_path, WINO, under="other")
    (other / "winogrande_l" / "validation.jsonl").write_bytes((other / "winogrande_l" / "train.jsonl").read_bytes())
    train_rows = rows(other / "winogrande_l" / "train.jsonl")
    assert mirror.load_mirror(other, "winogrande_l")["validation"].to_list() == train_rows

    folder = copy_sample(tmp_path, WINO)
    val = mirror.load_mirror(folder, "winogrande_l")["validation"]
    assert val[0]["sentence"].startswith("The bread was fresher than the cake")
    assert val.to_list() == rows(folder / "winogrande_l" / "validation.jsonl")


# --------------------------------------------------------------------------- corrupt files


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "after-a-good-load"])
def test_truncated_parquet_is_corrupt_naming_the_file(tmp_path, warm):
    folder = copy_sample(tmp_path, ARC)
    to_parquet(folder, "ARC-Challenge")
    if warm:  # the good copy is cached; the truncated one must still be read (and fail)
        mirror.load_mirror(folder, "ARC-Challenge")
    bad = folder / "ARC-Challenge" / "test.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])

    with pytest.raises(CorruptMirrorError) as exc:
        mirror.load_mirror(folder, "ARC-Challenge")
    assert one_line(exc).startswith(f"{bad}: unreadable parquet")
    with pytest.raises(CorruptMirrorError) as exc:
        mirror.check_split(folder, "ARC-Challenge", "test")
    assert one_line(exc).startswith(str(bad))
    # datasets builds every split of a config, so a run reading only validation would fail on
    # this file too: checking validation names it as well.
    with pytest.raises(CorruptMirrorError) as exc:
        mirror.check_split(folder, "ARC-Challenge", "validation")
    assert one_line(exc).startswith(str(bad))


def test_malformed_jsonl_is_corrupt_naming_file_and_line(tmp_path):
    folder = copy_sample(tmp_path, WINO)
    bad = folder / "winogrande_l" / "validation.jsonl"
    text = bad.read_text()
    bad.write_text(text[: len(text) - 20])  # cut inside the last row
    n = len(bad.read_text().splitlines())
    assert n == 2

    with pytest.raises(CorruptMirrorError) as exc:
        mirror.check_split(folder, "winogrande_l", "validation")
    assert one_line(exc).startswith(f"{bad}: line {n}: not JSON")
    with pytest.raises(CorruptMirrorError, match="validation.jsonl: line"):
        mirror.load_mirror(folder, "winogrande_l")


@pytest.mark.parametrize(
    "damage, problem",
    [
        (
            lambda t: t.replace("configs:\n- config_name", "configs:\n- config_name: [\n- config_name", 1),
            "malformed front matter (line 4)",
        ),
        (lambda t: t.replace("\n---\n", "\n\n", 1), "never closed"),
        (lambda t: t.replace("configs:\n", "configs: 7\nx:\n", 1), "not a list of mappings"),
    ],
)
def test_malformed_readme_is_corrupt_naming_the_readme(tmp_path, damage, problem):
    folder = copy_sample(tmp_path, WINO)
    readme = folder / "README.md"
    readme.write_text(damage(readme.read_text()))
    for call in (
        lambda: mirror.load_mirror(folder, "winogrande_l"),
        lambda: mirror.check_split(folder, "winogrande_l", "validation"),
    ):
        with pytest.raises(CorruptMirrorError) as exc:
            call()
        assert one_line(exc).startswith(f"{readme}: ")
        assert problem in str(exc.value)


def test_rows_disagreeing_with_readme_split_sizes_are_corrupt(tmp_path):
    """Hub mirrors record num_examples per split; a rewritten file is refused, not scored."""
    folder = copy_sample(tmp_path, WINO)
    readme = folder / "README.md"
    readme.write_text(
        readme.read_text().replace(
            "    dtype: string\n---",
            "    dtype: string\n  splits:\n  - name: train\n    num_bytes: 1\n    num_examples: 6\n"
            "  - name: validation\n    num_bytes: 1\n    num_examples: 999\n---",
            1,
        )
    )
    with pytest.raises(CorruptMirrorError) as exc:
        mirror.load_mirror(folder, "winogrande_l")
    assert one_line(exc).startswith(f"{readme}: ")
    assert "config winogrande_l split validation: README says 999 rows, files hold 2" in str(exc.value)
    readme.write_text(readme.read_text().replace("999", "2"))
    assert mirror.load_mirror(folder, "winogrande_l")["validation"].num_rows == 2


def test_missing_config_or_split_is_an_error_but_not_corrupt(tmp_path):
    folder = copy_sample(tmp_path, WINO)
    with pytest.raises(MirrorError) as exc:
        mirror.check_split(folder, "winogrande_l", "test")
    assert not isinstance(exc.value, CorruptMirrorError)
    assert one_line(exc) == (
        f"{folder / 'README.md'}: config winogrande_l has no split test (splits: train, validation)"
    )
    with pytest.raises(MirrorError) as exc:
        mirror.load_mirror(folder, "winogrande_xl")
    assert not isinstance(exc.value, CorruptMirrorError)
    assert one_line(exc).startswith(f"{folder / 'README.md'}: config winogrande_xl: ")


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_follows_the_bytes(tmp_path):
    folder = copy_sample(tmp_path, WINO)
    val = folder / "winogrande_l" / "validation.jsonl"
    fp = mirror.fingerprint(folder, "winogrande_l", "validation")
    assert [p for p, _, _ in fp.files] == ["winogrande_l/validation.jsonl"]
    # Reproducible outside Python: `cd FOLDER && sha256sum FILES | sha256sum`.
    listing = subprocess.run(
        ["sha256sum", "winogrande_l/validation.jsonl"], cwd=folder, capture_output=True, check=True
    ).stdout
    assert (
        fp.sha256
        == subprocess.run(["sha256sum"], input=listing, capture_output=True, check=True).stdout.split()[0].decode()
    )

    checked = mirror.check_split(folder, "winogrande_l", "validation")
    assert checked.sha256 == fp.sha256 and checked.num_rows == len(rows(val))
    assert mirror.load_mirror(folder, "winogrande_l")["validation"]._fingerprint == fp.sha256
    assert mirror.fingerprint(folder, "winogrande_l", "train").sha256 != fp.sha256

    val.write_bytes(val.read_bytes().replace(b"bread", b"bagel", 1))  # same size, one word
    changed = mirror.fingerprint(folder, "winogrande_l", "validation")
    assert changed.sha256 != fp.sha256 and changed.files[0][2] == fp.files[0][2]
    assert mirror.check_split(folder, "winogrande_l", "validation").sha256 == changed.sha256


# --------------------------------------------------------------------------- what each check reads


def builder_files(folder: Path, name: str | None, scratch: Path) -> dict[str, list[Path]]:
    from datasets import load_dataset_builder

    files = load_dataset_builder(str(folder), name, cache_dir=str(scratch)).config.data_files
    return {split: [Path(f) for f in fs] for split, fs in files.items()}


def configs_of(folder: Path) -> list[str | None]:
    """The first and last config a sample's README names (None where it names none)."""
    names = [c["config_name"] for c in mirror.front_matter(folder).get("configs") or []]
    return sorted({names[0], names[-1]}) if names else [None]


def datasets_in(mirror_dir: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(mirror_dir)) for p in mirror_dir.glob("*/*/README.md"))


@pytest.mark.parametrize("dataset", datasets_in(SAMPLES))
def test_split_files_are_the_files_load_dataset_builder_resolves(tmp_path, dataset):
    folder = copy_sample(tmp_path, dataset)
    for name in configs_of(folder):
        assert mirror.split_files(folder, name) == builder_files(folder, name, tmp_path), name


@pytest.mark.benchdata
@needs_mirror
@pytest.mark.parametrize("dataset", datasets_in(HUB) or ["(no mirror)"])
def test_split_files_of_the_real_mirror_are_the_files_load_dataset_builder_resolves(tmp_path, dataset):
    for name in configs_of(HUB / dataset):
        assert mirror.split_files(HUB / dataset, name) == builder_files(HUB / dataset, name, tmp_path), name


def test_split_files_follow_default_configs_data_dirs_and_globs(tmp_path):
    folder = tmp_path / "mirror" / "org" / "set"
    for path in ("a/train-0.jsonl", "a/train-1.jsonl", "a/test.jsonl", "bdir/part/test.jsonl"):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text('{"q": 1}\n')
    (folder / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: a\n  default: true\n  data_files:\n"
        "  - split: train\n    path: a/train-*.jsonl\n  - split: test\n    path: a/test.jsonl\n"
        "- config_name: b\n  data_dir: bdir\n  data_files:\n  - split: test\n    path: '**/*.jsonl'\n"
        "---\n"
    )
    for name in (None, "a", "b"):
        assert mirror.split_files(folder, name) == builder_files(folder, name, tmp_path / "scratch"), name
    assert mirror.split_files(folder)["train"] == [folder / "a" / "train-0.jsonl", folder / "a" / "train-1.jsonl"]
    with pytest.raises(MirrorError, match="config c: "):
        mirror.split_files(folder, "c")


@pytest.fixture
def settled(monkeypatch):
    """Files a test has just written count as settled, so their digests are remembered."""
    monkeypatch.setattr(digests, "RACY_NS", 0)


def test_the_check_before_a_run_reads_digests_not_data(tmp_path, monkeypatch, settled):
    folder = copy_sample(tmp_path, ARC)
    to_parquet(folder, "ARC-Challenge")
    mirror.verify_split(folder, "ARC-Challenge", "test")

    def refuse(path, *args):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(digests, "sha256", refuse)
    monkeypatch.setattr(mirror, "_parse_rows", refuse)
    mirror.verify_split(folder, "ARC-Challenge", "test")
    mirror.verify_split(folder, "ARC-Challenge", "train")  # same config: its files were all counted


@pytest.mark.parametrize("damage", ["truncated", "same size, mtime put back"])
def test_a_checked_file_damaged_later_is_refused_before_a_run(tmp_path, settled, damage):
    folder = copy_sample(tmp_path, ARC)
    to_parquet(folder, "ARC-Challenge")
    bad = folder / "ARC-Challenge" / "test.parquet"
    mirror.verify_split(folder, "ARC-Challenge", "test")
    st, data = bad.stat(), bad.read_bytes()
    time.sleep(0.05)  # past a tick of the file system's clock: `settled` turns off what covers edits inside one
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    else:  # the footer's magic bytes overwritten: same size, and the old mtime put back
        bad.write_bytes(data[:-4] + b"XXXX")
        os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(CorruptMirrorError) as exc:
        mirror.verify_split(folder, "ARC-Challenge", "test")
    assert one_line(exc).startswith(f"{bad}: unreadable parquet")


def test_what_a_run_reads_is_hashed_in_full_whatever_the_cache_says(tmp_path, settled):
    """The hole a stat leaves (a same-size rewrite inside one clock tick) made by hand: the cache
    is told the old digest for the new bytes. The check before a run may believe it; the load key,
    the fingerprint a run records and the re-check after the run must not."""
    folder = copy_sample(tmp_path, WINO)
    val = folder / "winogrande_l" / "validation.jsonl"
    old = mirror.fingerprint(folder, "winogrande_l", "validation").files[0][1]
    val.write_bytes(val.read_bytes().replace(b"bread", b"bagel", 1))
    new = digests.sha256(val).sha256  # remembered with the new stat ...
    record = digests._file_record(val)
    record.write_text(record.read_text().replace(new, old))  # ... and then told the old digest
    assert digests.recall(val).sha256 == old  # believed where it may be

    assert mirror.fingerprint(folder, "winogrande_l", "validation").files[0][1] == new
    loaded = mirror.load_mirror(folder, "winogrande_l")["validation"]
    assert loaded["sentence"][0].startswith("The bagel")
    assert loaded._fingerprint == mirror.fingerprint(folder, "winogrande_l", "validation").sha256


def test_checking_two_splits_of_a_config_loads_it_once(tmp_path, monkeypatch):
    folder = copy_sample(tmp_path, WINO)
    loads = []
    load = mirror.load_mirror
    monkeypatch.setattr(mirror, "load_mirror", lambda *a, **kw: loads.append(a) or load(*a, **kw))
    train = mirror.check_split(folder, "winogrande_l", "train")
    val = mirror.check_split(folder, "winogrande_l", "validation")
    assert len(loads) == 1
    assert (train.num_rows, val.num_rows) == (len(rows(folder / "winogrande_l" / "train.jsonl")), 2)

    (folder / "winogrande_l" / "train.jsonl").write_text(json.dumps(rows(folder / "winogrande_l" / "train.jsonl")[0]))
    assert mirror.check_split(folder, "winogrande_l", "validation").num_rows == 2
    assert len(loads) == 2  # other bytes: loaded again
