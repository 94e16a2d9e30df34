"""CommonSenseQA in the "MMLU setup" of Meta's Llama 3.1 eval notes: every choice is shown
with its letter and the model is scored on the likelihood of the letter alone.

The continuations are " A".." E" (one token each in Llama 3's tokenizer, the engine's
single-token fast path), as in the ARC-Challenge letter task.
"""

LETTERS = "ABCDE"


def doc_to_text(doc: dict) -> str:
    lines = [f"Question: {doc['question'].strip()}"]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(doc["choices"]["text"])]
    lines.append("Answer:")
    return "\n".join(lines)


def doc_to_choice(doc: dict) -> list[str]:
    return list(LETTERS[: len(doc["choices"]["text"])])


def doc_to_target(doc: dict) -> int:
    # Found by label, not by assuming the labels are in "ABCDE" order.
    return doc["choices"]["label"].index(doc["answerKey"])
