"""One check of a whole run folder, before any command publishes a number from it.

Every file the run holds is read through its model (harness.results.schema), and the files are
held against each other where one is the source of another: a manifest names the folder it is
in, each complete variant's answer store names this run and this variant, and drift.json names
this run. compare, gate, report, card, drift and rescore all start here (the comparison is built
only from a folder that passed), so a damaged or mixed-up folder is one line naming the file,
never a number.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

from harness.results.schema import COMPLETE, RunRecord
from harness.results.store import RunStore, StoreError


def check_run(store: RunStore) -> RunRecord:
    """The run's record, once every file of the folder read and agreed; StoreError otherwise."""
    run = store.read_run()
    for name in run.evaluated_variants(with_skipped=True):
        if not store.has_manifest(name):
            continue  # never started: the comparison says so
        path = store.manifest_path(name)
        manifest = store.read_manifest(name)
        if manifest.variant != name:
            raise StoreError(f"{path}: the manifest of variant {manifest.variant}, in folder {name}")
        if manifest.status != COMPLETE:
            continue
        store.read_results(name)
        for task in store.sample_tasks(name):
            store.read_samples(name, task)
        check_answer_store(store, run.run_id, name)
    drift = store.read_drift()
    if drift is not None and drift.run_id != run.run_id:
        raise StoreError(f"{store.root / 'drift.json'}: drift of run {drift.run_id}, not of this run ({run.run_id})")
    return run


def check_answer_store(store: RunStore, run_id: str, variant: str) -> None:
    """A complete variant's answers are its own: the store's identity names this run and variant.
    (Stores from before the identity was kept name nobody; only rescore, which reads the answers,
    needs them to.)"""
    path = store.answers_path(variant)
    if not path.exists():
        return  # a run made before answers were kept, or a folder copied without them
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            found = answers_identity(db)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a readable answer store ({e})") from None
    if found is not None and found != (run_id, variant):
        raise StoreError(f"{path}: holds the answers of run {found[0]} variant {found[1]}, not of this run's {variant}")


def answers_identity(db: sqlite3.Connection) -> tuple[str, str] | None:
    """(run id, variant) an answer store says it belongs to; None when it says nothing."""
    try:
        row = db.execute("SELECT run_id, variant FROM identity").fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # a store written before it carried its identity
            return None
        raise
    return None if row is None else (str(row[0]), str(row[1]))
