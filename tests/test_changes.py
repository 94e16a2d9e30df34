"""`harness diff`: which documents a variant answers differently, in what order, and what is refused."""

import csv
import io
import json
import re
from pathlib import Path

import pytest
from changefixtures import GENERATION_METRIC, LETTER_METRIC, generation_record, letter_record, write_sample_run

from harness import cli
from harness.analysis.changes import (
    Change,
    ChangeList,
    answer_text,
    choice_labels,
    find_changes,
    question_of,
    word_diff,
)
from harness.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
# Card tasks: each is judged on the card's metric (acc,none; exact_match,strict-match).
ARC, GSM = "llama3_arc_challenge", "llama3_gsm8k_cot"

# (baseline log-likelihoods, int8's, gold): gold is choice 1 (B) throughout.
LETTER_DOCS = [
    ([-2.0, -1.0, -1.2, -3.0], [-2.0, -1.3, -1.0, -3.0], 1),  # 0 right->wrong, baseline margin +0.2
    ([-4.0, -0.5, -2.5, -3.0], [-0.4, -0.5, -2.5, -3.0], 1),  # 1 right->wrong, baseline margin +2.0
    ([-1.0, -1.5, -2.0, -3.0], [-1.6, -1.5, -2.0, -3.0], 1),  # 2 wrong->right, baseline margin -0.5
    ([-0.5, -3.5, -2.0, -3.0], [-3.6, -3.5, -4.0, -4.0], 1),  # 3 wrong->right, baseline margin -3.0
    ([-1.0, -2.0, -3.0, -3.0], [-3.0, -2.0, -1.0, -3.0], 1),  # 4 changed: A -> C, both wrong
    ([-1.0, -0.1, -3.0, -3.0], [-1.1, -0.2, -3.0, -3.0], 1),  # 5 unchanged
]
GENERATIONS = [
    ("So 3 * 12 = 36. The final answer is 36", "So 3 * 3 = 9. The final answer is 9", "9"),  # wrong->right
    ("So 2 + 2 = 4. The final answer is 4", "So 2 + 2 = 4. The final answer is 4", "4"),  # unchanged
    ("The final answer is 7", "The answer: <script>x</script>. The final answer is 8", "5"),  # changed
    ("So 5 - 1 = 4. The final answer is 4", "So 5 - 1 = 3. The final answer is 3", "4"),  # right->wrong
]


def letter_records(variant_index: int, salt: str = "") -> list:
    return [letter_record(ARC, i, doc[variant_index], doc[2], salt) for i, doc in enumerate(LETTER_DOCS)]


def generation_records(variant_index: int) -> list:
    return [generation_record(GSM, i, doc[variant_index], doc[2]) for i, doc in enumerate(GENERATIONS)]


@pytest.fixture
def run(tmp_path):
    records = {
        "bf16": {ARC: letter_records(0), GSM: generation_records(0)},
        "int8": {ARC: letter_records(1), GSM: generation_records(1)},
    }
    return write_sample_run(tmp_path / "run", records, tasks=[ARC, GSM])


def test_changes_come_most_informative_first(run):
    changes = find_changes(run)
    letters = [(c.doc_id, c.kind) for c in changes.changes if c.task == ARC]
    assert letters == [
        (1, "right-to-wrong"),  # the baseline was sure: a real loss
        (0, "right-to-wrong"),  # a near coin flip that fell the other way
        (3, "wrong-to-right"),
        (2, "wrong-to-right"),
        (4, "changed"),
    ]
    words = [(c.doc_id, c.kind) for c in changes.changes if c.task == GSM]
    assert words == [(3, "right-to-wrong"), (0, "wrong-to-right"), (2, "changed")]
    assert [t.task for t in changes.tasks] == [ARC, GSM]
    (letter_counts, word_counts) = changes.tasks
    assert (letter_counts.documents, letter_counts.right_to_wrong, letter_counts.wrong_to_right) == (6, 2, 2)
    assert (letter_counts.changed, letter_counts.metric) == (1, LETTER_METRIC)
    assert (word_counts.documents, word_counts.changed, word_counts.metric) == (4, 1, GENERATION_METRIC)


def test_a_letter_change_shows_every_choice_on_both_sides(run):
    (sure_loss, *_) = find_changes(run).changes
    assert sure_loss.question == "Question: item 1?\nA. choice A\nB. choice B\nC. choice C\nD. choice D\nAnswer:"
    assert (sure_loss.target, sure_loss.choices) == ("B", ["A", "B", "C", "D"])
    assert (sure_loss.baseline.extracted, sure_loss.variant.extracted) == ("B", "A")
    assert sure_loss.baseline.choice_loglikelihoods == LETTER_DOCS[1][0]
    assert sure_loss.variant.choice_loglikelihoods == LETTER_DOCS[1][1]
    assert sure_loss.baseline.margin == pytest.approx(2.0) and sure_loss.variant.margin == pytest.approx(-0.1)
    assert sure_loss.response_diff is None


def test_a_generation_change_marks_the_words_and_where_they_first_differ(run):
    (fixed,) = [c for c in find_changes(run).changes if c.task == GSM and c.doc_id == 0]
    assert (fixed.baseline.response, fixed.variant.response) == (GENERATIONS[0][0], GENERATIONS[0][1])
    assert (fixed.baseline.extracted, fixed.variant.extracted, fixed.target) == ("36", "9", "9")
    assert (fixed.first_diverging_word, fixed.first_diverging_char) == (3, len("So 3 * "))
    assert fixed.choices is None and fixed.baseline.choice_loglikelihoods is None
    assert "".join(d.text for d in fixed.response_diff if d.op != "insert") == GENERATIONS[0][0]
    assert "".join(d.text for d in fixed.response_diff if d.op != "delete") == GENERATIONS[0][1]


@pytest.mark.parametrize(
    "before, after, ops, first",
    [
        ("a b c", "a b c", [("equal", "a b c")], (None, None)),
        ("a b c", "a x c", [("equal", "a "), ("delete", "b"), ("insert", "x"), ("equal", " c")], (1, 2)),
        ("", "new", [("insert", "new")], (0, 0)),
        ("old words", "", [("delete", "old words")], (0, 0)),
        ("x\n\n", "x", [("equal", "x"), ("delete", "\n\n")], (1, 1)),
    ],
)
def test_word_diff_cases(before, after, ops, first):
    diff, word, char = word_diff(before, after)
    assert [(d.op, d.text) for d in diff] == ops
    assert (word, char) == first


def test_documents_that_do_not_pair_are_refused_not_compared(tmp_path):
    base = letter_records(0)
    cand = letter_records(1)
    cand[1] = letter_record(ARC, 1, LETTER_DOCS[1][1], 1, salt="other prompt")
    cand = [r for r in cand if r.doc_id != 5]  # doc 5 missing
    cand.append(letter_record(ARC, 9, LETTER_DOCS[0][1], 1))  # doc 9 only in int8
    store = write_sample_run(tmp_path / "run", {"bf16": {ARC: base}, "int8": {ARC: cand}})
    changes = find_changes(store)
    reasons = {r.doc_id: r.reason for r in changes.refused}
    assert set(reasons) == {1, 5, 9}
    assert reasons[1].startswith("prompt hashes differ (bf16 ")
    assert reasons[5] == "missing in int8"
    assert reasons[9] == "missing in bf16"
    assert sorted(c.doc_id for c in changes.changes) == [0, 2, 3, 4]  # the refused ones never compared
    assert (changes.tasks[0].documents, changes.tasks[0].refused) == (4, 3)


def test_a_document_recorded_twice_refuses_the_run(tmp_path):
    # Two records of one document: the samples file is damaged, so no item of the run is listed.
    cand = letter_records(1)
    cand.insert(2, cand[2])
    store = write_sample_run(tmp_path / "run", {"bf16": {ARC: letter_records(0)}, "int8": {ARC: cand}})
    with pytest.raises(UsageError, match="int8/samples/llama3_arc_challenge.jsonl: doc_id 2 appears more than once"):
        find_changes(store)


def test_a_task_the_variant_has_no_samples_of_is_refused_whole(tmp_path, run):
    (run.variant_dir("int8") / "samples" / "llama3_gsm8k_cot.jsonl").unlink()
    changes = find_changes(run)
    assert [(r.task, r.doc_id, r.reason) for r in changes.refused] == [(GSM, None, "no samples in int8")]


def test_only_and_limit(run):
    only = find_changes(run, only="right-to-wrong", limit=1)
    assert [(c.task, c.doc_id) for c in only.changes] == [(ARC, 1), (GSM, 3)]
    assert only.tasks[0].right_to_wrong == 2  # counts are of every document, before --only and --limit
    assert [c.doc_id for c in find_changes(run, task=GSM).changes] == [3, 0, 2]


# Every field of an item, as docs/changes.md documents them.
CHANGE_FIELDS = {
    "task",
    "doc_id",
    "kind",
    "metric",
    "question",
    "target",
    "choices",
    "baseline",
    "variant",
    "response_diff",
    "first_diverging_word",
    "first_diverging_char",
    "drift",
}
SIDE_FIELDS = {"variant", "extracted", "score", "response", "choice_loglikelihoods", "margin"}


def test_json_output_has_the_documented_shape(run, capsys):
    assert cli.main(["diff", str(run.root), "--format", "json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert set(raw) == {"schema_version", "run_id", "baseline", "tasks", "changes", "refused"}
    assert all(set(item) == CHANGE_FIELDS for item in raw["changes"])
    assert all(set(item["baseline"]) == SIDE_FIELDS == set(item["variant"]) for item in raw["changes"])
    assert ChangeList.model_validate(raw) == find_changes(run)
    page = (ROOT / "docs" / "changes.md").read_text()
    undocumented = [f for f in CHANGE_FIELDS | SIDE_FIELDS if f"`{f}`" not in page]
    assert not undocumented


def test_text_output_shows_both_responses_and_the_word_diff(run, capsys):
    assert cli.main(["diff", str(run.root), "--task", GSM, "--only", "wrong-to-right"]) == 0
    out = capsys.readouterr().out
    assert "== llama3_gsm8k_cot doc 0: wrong-to-right (exact_match,strict-match 0 -> 1), int8" in out
    assert "So 3 * [-12-]{+3+} = [-36.-]{+9.+} The final answer is [-36-]{+9+}" in out
    assert "responses first differ at word 3 (character 7) of bf16's" in out
    assert GENERATIONS[0][0] in out and GENERATIONS[0][1] in out


def test_text_output_of_a_letter_task_lists_each_choice_on_both_sides(run, capsys):
    assert cli.main(["diff", str(run.root), "--task", ARC, "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"B \(gold\)\s+-0\.500\s+-0\.500\s+\+0\.000", out)
    assert re.search(r"A\s+-4\.000\s+-0\.400\s+\+3\.600", out)
    assert out.count("== llama3_arc_challenge doc") == 1


def test_csv_output_is_one_row_per_document(run, capsys):
    assert cli.main(["diff", str(run.root), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8
    assert rows[0]["doc_id"] == "1" and rows[0]["baseline_choice_loglikelihoods"] == "-4 -0.5 -2.5 -3"
    (script,) = [r for r in rows if r["task"] == GSM and r["doc_id"] == "2"]
    assert script["variant_response"] == GENERATIONS[2][1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--variant", "nope"], "--variant nope: not a variant of"),
        (["--variant", "bf16"], "--variant bf16: is the baseline"),
        (["--task", "nope"], "--task nope: "),
        (["--limit", "0"], "argument --limit: 0 must be at least 1"),
        (["--limit", "x"], "argument --limit: 'x' is not a whole number"),
        (["--only", "worse"], "argument --only: invalid choice"),
        (["--format", "xml"], "argument --format: invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, capsys, args, message):
    assert cli.main(["diff", str(run.root), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_missing_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["diff", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"harness diff: error: {tmp_path / 'nope'}: no such run folder\n"


def test_a_failed_variant_named_is_bad_input_and_skipped_otherwise(tmp_path, capsys):
    records = {"bf16": {ARC: letter_records(0)}, "int8": {ARC: letter_records(1)}}
    store = write_sample_run(tmp_path / "run", records, failed={"fp8": "engine crashed"})
    assert cli.main(["diff", str(store.root), "--variant", "fp8"]) == 2
    assert "--variant fp8: is failed; it has no samples to compare" in capsys.readouterr().err
    assert {c.variant.variant for c in find_changes(store).changes} == {"int8"}


def test_items_are_typed_changes():
    assert set(Change.model_fields) == CHANGE_FIELDS


@pytest.mark.engine
def test_diff_on_the_demo_run_lists_every_gsm8k_document_int8_answers_differently(demo_run, capsys):
    proc, store = demo_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    base = {r.doc_id: r for r in store.read_samples("bf16", GSM)}
    int8 = {r.doc_id: r for r in store.read_samples("int8-w8a8", GSM)}
    differ = {
        doc_id
        for doc_id, r in base.items()
        if r.extracted["strict-match"] != int8[doc_id].extracted["strict-match"] or r.scores != int8[doc_id].scores
    }
    changes = find_changes(store, variant="int8-w8a8", task=GSM)
    assert {c.doc_id for c in changes.changes} == differ and not changes.refused
    assert cli.main(["diff", str(store.root), "--variant", "int8-w8a8", "--task", GSM]) == 0
    out = capsys.readouterr().out
    for change in changes.changes:
        assert change.baseline.response == base[change.doc_id].response[0][0]
        assert change.variant.response == int8[change.doc_id].response[0][0]
        assert f"== {GSM} doc {change.doc_id}: {change.kind}" in out
        assert change.response_diff is not None
    letters = find_changes(store, variant="int8-w8a8", task=ARC).changes
    assert all(len(c.baseline.choice_loglikelihoods) == len(c.variant.choice_loglikelihoods) == 4 for c in letters)


@pytest.mark.parametrize(
    "prompt, question",
    [
        ("Q: 1?\nA: 1\n\nQ: 2?\nA:", "Q: 2?\nA:"),
        ("no few-shot examples\n", "no few-shot examples"),
        ("shot\n\nquestion\n\n\n", "question"),
        (None, ""),
    ],
)
def test_the_question_is_the_prompts_last_block(prompt, question):
    assert question_of(prompt) == question


@pytest.mark.parametrize(
    "question, n, labels",
    [
        ("Q?\nA. x\nB. y\nC. z\nAnswer:", 3, ["A", "B", "C"]),
        ("Q?\n(A) x\n(B) y\nAnswer:", 2, ["A", "B"]),
        ("Q?\nA. x\nB. y\nAnswer:", 4, ["0", "1", "2", "3"]),  # not the choices scored: numbers
        ("Which is right? option one or option two", 2, ["0", "1"]),
    ],
)
def test_choice_labels(question, n, labels):
    assert choice_labels(question, n) == labels


@pytest.mark.parametrize(
    "value, text",
    [([["16"]], "16"), (["a", "b"], "a"), ("x", "x"), ([], "[]"), (3, "3"), (None, None), ([[]], "[[]]")],
)
def test_answer_text(value, text):
    assert answer_text(value) == text


def test_a_metric_better_lower_counts_a_rise_as_the_loss(tmp_path):
    base = [generation_record("ppl", i, "The final answer is 1", "1") for i in range(2)]
    cand = [generation_record("ppl", i, "The final answer is 1", "1") for i in range(2)]
    for records, values in ((base, [3.0, 5.0]), (cand, [4.0, 2.0])):
        for record, value in zip(records, values):
            record.scores = {"word_perplexity,none": value}
    store = write_sample_run(tmp_path / "run", {"bf16": {"ppl": base}, "int8": {"ppl": cand}})
    results = store.read_results("bf16").model_dump(by_alias=True)
    results["higher_is_better"] = {"ppl": {"word_perplexity": False}}
    store.write_results("bf16", results)
    assert [(c.doc_id, c.kind) for c in find_changes(store).changes] == [(0, "right-to-wrong"), (1, "wrong-to-right")]


def test_where_drift_moved_most_is_shown_beside_the_flip(run, capsys, tmp_path):
    from harness.analysis.drift import write_drift
    from harness.render.report import write_report
    from harness.results.schema import (
        DocumentDrift,
        DriftCost,
        DriftSettings,
        DriftSummary,
        DriftVariant,
        PositionDrift,
        SequenceCounts,
    )

    moved = DocumentDrift(
        task=GSM,
        doc_id=0,
        positions=[PositionDrift(position=41, kld=0.87, token=" 12", baseline_top=" 12", variant_top="<b>3</b>")],
    )
    cost = DriftCost(status="complete")
    summary = DriftSummary(
        run_id=run.read_run().run_id,
        baseline="bf16",
        settings=DriftSettings(max_sequences=1, max_tokens=64, top_k=20, method="m"),
        sequences=SequenceCounts(count=1, tokens=42, per_task={GSM: 1}),
        variants={
            "bf16": DriftVariant(status="complete", cost=cost),
            "int8": DriftVariant(status="complete", cost=cost, documents=[moved]),
        },
    )
    write_drift(run, summary)
    changes = find_changes(run)
    assert [(c.task, c.doc_id) for c in changes.changes if c.drift is not None] == [(GSM, 0)]
    assert cli.main(["diff", str(run.root), "--task", GSM, "--only", "wrong-to-right"]) == 0
    out = capsys.readouterr().out
    assert "where the prompt's next-token distribution moved most (drift.json):" in out
    assert "token 41 ' 12': KL 0.87 nats; most likely ' 12' (bf16), '<b>3</b>' (int8)" in out
    html = (write_report(run, tmp_path / "report")[0].parent / "report.html").read_text()
    assert "<td>41</td>" in html and "&lt;b&gt;3&lt;/b&gt;" in html and "<b>3</b>" not in html
