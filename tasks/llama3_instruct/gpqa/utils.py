"""GPQA: four options in a per-question order that is fixed by the question's Record ID.

The dataset stores the correct answer first; lm-eval's gpqa tasks shuffle with the global
random state, which would change the order (and the gold letter) between processes. Hashing
the Record ID keeps a document identical across runs and variants, so per-document scores
can be joined between bf16 and 8-bit.
"""

import hashlib
import random
import re

LETTERS = "ABCD"


def _clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\s+", " ", text)


def process_docs(dataset):
    def _process(doc):
        options = [
            _clean(doc["Correct Answer"]),
            _clean(doc["Incorrect Answer 1"]),
            _clean(doc["Incorrect Answer 2"]),
            _clean(doc["Incorrect Answer 3"]),
        ]
        order = list(range(4))
        seed = int(hashlib.sha256(doc["Record ID"].encode()).hexdigest()[:8], 16)
        random.Random(seed).shuffle(order)
        return {
            "question": _clean(doc["Question"]),
            "options": [options[i] for i in order],
            "gold": order.index(0),
        }

    return dataset.map(_process)


def doc_to_text(doc: dict) -> str:
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(doc["options"]))
    return (
        "Given the following question and four candidate answers (A, B, C and D), choose "
        f"the best answer.\nQuestion: {doc['question']}\n{options}\n"
        'Your response should end with "The best answer is [the_answer_letter]" where the '
        "[the_answer_letter] is one of A, B, C or D."
    )
