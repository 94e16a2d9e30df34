"""Extractive-QA helpers: SQuAD-style answer normalisation, exact match and token F1, and
the conversation-history prompts of SQuAD v2 (Meta's setting) and QuAC.

Scores are the maximum over the gold answers, per document, as in the official scripts.
"""

from __future__ import annotations

import collections
import re
import string

UNANSWERABLE = "unanswerable"  # SQuAD v2 gold when a question has no answer in the passage
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


def _squad_golds(doc: dict) -> list[str]:
    texts = [t for t in doc["answers"]["text"] if t.strip()]
    return texts or [UNANSWERABLE]


def squad_process_docs(dataset):
    """Attach the earlier questions (and first gold answers) on the same passage.

    Meta's prompt is "{shot} {passage} {all previous Q&A pairs of that passage} {question}";
    questions on one passage are consecutive in the dataset, in their original order.
    """
    history: dict[str, list[list[str]]] = collections.defaultdict(list)

    def _process(doc):
        previous = list(history[doc["context"]])
        golds = _squad_golds(doc)
        history[doc["context"]].append([doc["question"], golds[0]])
        return {"history": previous, "golds": golds}

    return dataset.map(_process, load_from_cache_file=False)


def squad_doc_to_text(doc: dict) -> str:
    turns = "".join(f"Q: {q}\nA: {a}\n" for q, a in doc["history"])
    return f"{doc['title']}\n{doc['context'].strip()}\n\n{turns}Q: {doc['question'].strip()}\nA:"


def squad_doc_to_target(doc: dict) -> str:
    return doc["golds"][0]


def squad_process_results(doc: dict, results: list[str]) -> dict:
    pred = _first_line(results[0])
    return {"exact_match": exact_match(pred, doc["golds"]), "f1": f1(pred, doc["golds"])}


# ----------------------------------------------------------------------------------- QuAC


def quac_process_docs(dataset):
    """One document per dialogue turn, carrying the dialogue's earlier turns.

    Earlier answers are the ones the dialogue's student saw (orig_answers); golds for
    scoring are all validated answers of the turn.
    """

    def _turns(batch):
        out = collections.defaultdict(list)
        for i in range(len(batch["dialogue_id"])):
            questions = batch["questions"][i]
            seen = batch["orig_answers"][i]["texts"]
            for t, question in enumerate(questions):
                golds = [g for g in batch["answers"][i]["texts"][t] if g.strip()] or [seen[t]]
                out["turn_id"].append(batch["turn_ids"][i][t])
                out["title"].append(batch["wikipedia_page_title"][i])
                out["section_title"].append(batch["section_title"][i])
                out["background"].append(batch["background"][i])
                out["context"].append(batch["context"][i])
                out["history"].append([[q, a] for q, a in zip(questions[:t], seen[:t])])
                out["question"].append(question)
                out["golds"].append(golds)
        return out

    return dataset.map(_turns, batched=True, remove_columns=dataset.column_names,
                       load_from_cache_file=False)


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
    return {"f1": f1(pred, doc["golds"]), "exact_match": exact_match(pred, doc["golds"])}
