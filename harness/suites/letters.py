"""The "MMLU setup" of Meta's Llama 3 eval notes, as ARC-Challenge and CommonSenseQA use it: every
choice is shown with its letter and the model is scored on the likelihood of the letter alone.

Both datasets label their choices "A".."E" (ARC also "1".."5") and have 3-5 choices a question;
the prompt always uses letters by position, so the continuation is one of " A".." E" (one token
each in Llama 3's tokenizer, which the engine's single-token fast path relies on). The two task
folders' helper files re-export these functions for their YAMLs' `!function` lines: lm-eval
loads such a module by file from the YAML's own folder, so the shared code lives here.
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
    # The gold index is found by label, not by assuming the labels are in "ABCDE" order.
    return doc["choices"]["label"].index(doc["answerKey"])
