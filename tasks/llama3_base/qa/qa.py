"""Extractive-QA helpers: SQuAD-style answer normalisation, exact match and token F1, the
conversation-history prompts of SQuAD v2 (Meta's setting) and QuAC, and each dataset's own
scoring rules for questions without an answer.

Every score is per document, so lm-eval's mean over documents is the official aggregate.
"""

from __future__ import annotations

import collections
import re
import string

UNANSWERABLE = "unanswerable"  # shown as the answer of earlier unanswerable SQuAD v2 questions
QUAC_NO_ANSWER = "CANNOTANSWER"  # QuAC's own marker, kept verbatim

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, collapse whitespace (SQuAD's script)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: list[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def f1(prediction: str, golds: list[str]) -> float:
    def one(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        if not p or not g:  # both empty counts as a match, one empty as a miss
            return float(p == g)
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max((one(prediction, g) for g in golds), default=0.0)


def _first_line(response: str) -> str:
    return response.strip().split("\n")[0].strip()


# ------------------------------------------------------------------------------- SQuAD v2
#
# Scored as SQuAD v2's official script (evaluate-v2.0.py) does: gold answers are the texts
# that normalise to something non-empty; an unanswerable question's only gold is the empty
# answer, so it is right exactly when the prediction is empty. The prompt marks earlier
# unanswerable questions with UNANSWERABLE, so a prediction of that word is the model's way of
# giving the empty answer.


def _squad_golds(doc: dict) -> list[str]:
    return [t for t in doc["answers"]["text"] if normalize_answer(t)]


def _with_history(dataset):
    """Attach the earlier questions (and first gold answers) on the same passage.

    Meta's prompt is "{shot} {passage} {all previous Q&A pairs of that passage} {question}";
    questions on one passage are consecutive in the dataset, in their original order.
    """
    history: dict[str, list[list[str]]] = collections.defaultdict(list)

    def _process(doc):
        previous = list(history[doc["context"]])
        golds = _squad_golds(doc)
        history[doc["context"]].append([doc["question"], golds[0] if golds else UNANSWERABLE])
        return {"history": previous, "golds": golds, "answerable": bool(golds)}

    return dataset.map(_process, load_from_cache_file=False)


def squad_process_docs(dataset):
    """Every question with its passage history: the shot pool (answerable or not)."""
    return _with_history(dataset)


def squad_hasans_docs(dataset):
    """The answerable questions (SQuAD v2's HasAns set), history built over all questions."""
    return _with_history(dataset).filter(lambda d: d["answerable"], load_from_cache_file=False)


def squad_noans_docs(dataset):
    """The unanswerable questions (SQuAD v2's NoAns set), history built over all questions."""
    return _with_history(dataset).filter(lambda d: not d["answerable"], load_from_cache_file=False)


def squad_doc_to_text(doc: dict) -> str:
    turns = "".join(f"Q: {q}\nA: {a}\n" for q, a in doc["history"])
    return f"{doc['title']}\n{doc['context'].strip()}\n\n{turns}Q: {doc['question'].strip()}\nA:"


def squad_doc_to_target(doc: dict) -> str:
    return doc["golds"][0] if doc["golds"] else UNANSWERABLE


def squad_scores(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction as SQuAD v2's official script scores it."""
    if normalize_answer(prediction) == normalize_answer(UNANSWERABLE):
        prediction = ""  # the model abstained in the prompt's own words
    golds = golds or [""]
    return exact_match(prediction, golds), f1(prediction, golds)


def squad_hasans_results(doc: dict, results: list[str]) -> dict:
    em, f = squad_scores(_first_line(results[0]), doc["golds"])
    return {"exact_match": em, "f1": f, "exact_match_hasans": em, "f1_hasans": f}


def squad_noans_results(doc: dict, results: list[str]) -> dict:
    em, f = squad_scores(_first_line(results[0]), doc["golds"])
    return {"exact_match": em, "f1": f, "exact_match_noans": em, "f1_noans": f}


# ----------------------------------------------------------------------------------- QuAC
#
# Scored as QuAC's official scorer (scorer.py of the QuAC release) does for each question:
# when at least half of the reference answers are CANNOTANSWER the only reference is
# CANNOTANSWER, otherwise the CANNOTANSWER references are dropped; a CANNOTANSWER reference is
# matched only by the literal prediction CANNOTANSWER; with several references the F1 is the
# mean over leaving each one out of the max over the rest; questions whose references agree
# with each other below F1 0.4 are not scored.

QUAC_MIN_AGREEMENT = 0.4


def quac_references(texts: list[str]) -> list[str]:
    cannot = sum(t == QUAC_NO_ANSWER for t in texts)
    if cannot >= len(texts) - cannot:
        return [QUAC_NO_ANSWER]
    return [t for t in texts if t != QUAC_NO_ANSWER]


def _quac_pair_f1(prediction: str, reference: str) -> float:
    if reference == QUAC_NO_ANSWER:
        return float(prediction == QUAC_NO_ANSWER)
    p, g = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if common == 0:  # QuAC's f1_score: no shared token is 0, even when both are empty
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def quac_f1(prediction: str, references: list[str]) -> float:
    if len(references) == 1:
        return _quac_pair_f1(prediction, references[0])
    held_out = [
        max(_quac_pair_f1(prediction, r) for j, r in enumerate(references) if j != i) for i in range(len(references))
    ]
    return sum(held_out) / len(held_out)


def quac_agreement(references: list[str]) -> float:
    """QuAC's human F1 of a question: each reference scored against the others."""
    if len(references) == 1:
        return 1.0
    return sum(
        max(_quac_pair_f1(r, o) for j, o in enumerate(references) if j != i) for i, r in enumerate(references)
    ) / len(references)


def quac_process_docs(dataset):
    """One document per scored dialogue turn, carrying the dialogue's earlier turns.

    Earlier answers are the ones the dialogue's student saw (orig_answers), also for turns
    that are not scored; references for scoring are all answers of the turn, after QuAC's
    CANNOTANSWER rule.
    """

    def _turns(batch):
        out = collections.defaultdict(list)
        for i in range(len(batch["dialogue_id"])):
            questions = batch["questions"][i]
            seen = batch["orig_answers"][i]["texts"]
            for t, question in enumerate(questions):
                golds = quac_references(batch["answers"][i]["texts"][t] or [seen[t]])
                if quac_agreement(golds) < QUAC_MIN_AGREEMENT:
                    continue
                out["turn_id"].append(batch["turn_ids"][i][t])
                out["title"].append(batch["wikipedia_page_title"][i])
                out["section_title"].append(batch["section_title"][i])
                out["background"].append(batch["background"][i])
                out["context"].append(batch["context"][i])
                out["history"].append([[q, a] for q, a in zip(questions[:t], seen[:t])])
                out["question"].append(question)
                out["golds"].append(golds)
        return out

    return dataset.map(_turns, batched=True, remove_columns=dataset.column_names, load_from_cache_file=False)


def quac_doc_to_text(doc: dict) -> str:
    turns = "".join(f"Q: {q}\nA: {a}\n" for q, a in doc["history"])
    context = doc["context"].replace(QUAC_NO_ANSWER, "").strip()
    return (
        f"{doc['title']}: {doc['section_title']}\n{doc['background'].strip()}\n\n"
        f"{context}\n\n{turns}Q: {doc['question'].strip()}\nA:"
    )


def quac_doc_to_target(doc: dict) -> str:
    return doc["golds"][0]


def quac_process_results(doc: dict, results: list[str]) -> dict:
    pred = _first_line(results[0])
    golds = doc["golds"]
    em = float(pred == QUAC_NO_ANSWER) if golds == [QUAC_NO_ANSWER] else exact_match(pred, golds)
    return {"f1": quac_f1(pred, golds), "exact_match": em}
