"""ARC-Challenge in the "MMLU setup" of Meta's eval_details.md: every choice is shown with a
letter and the model is scored on the likelihood of the letter alone.

ARC labels its choices "A".."E" or "1".."5" and has 3-5 choices per question; the prompt
always uses letters by position, so the continuation is one of " A".." E" (one token each in
Llama 3's tokenizer, which the engine's single-token fast path relies on).
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
    # The gold index is found by label, not by assuming label order matches "ABCD".
    return doc["choices"]["label"].index(doc["answerKey"])
