"""CommonSenseQA with the 7 chain-of-thought exemplars of Wei et al. 2022 (Table 24).

Choices are shown as "(a) ..", one per line (the paper's table drops those newlines for
space); the model's reasoning must end with "So the answer is (x)."
"""


def doc_to_text(doc: dict) -> str:
    choices = "\n".join(
        f"({label.lower()}) {text}" for label, text in zip(doc["choices"]["label"], doc["choices"]["text"])
    )
    return f"Q: {doc['question'].strip()}\nAnswer Choices:\n{choices}\nA:"


def doc_to_target(doc: dict) -> str:
    return doc["answerKey"].lower()


def _shot(question, choices, answer, cot):
    labels = list("ABCDE"[: len(choices)])
    return {
        "question": question,
        "choices": {"label": labels, "text": choices},
        "answerKey": answer,
        "cot": f"{cot} So the answer is ({answer.lower()}).",
    }


def fewshot_samples() -> list[dict]:
    # Verbatim from the paper, including its answer "(b)" for the fox question, whose
    # correct choice is (c): reproducing Meta's setting means reproducing the prompt.
    return [
        _shot(
            "What do people use to absorb extra ink from a fountain pen?",
            ["shirt pocket", "calligrapher's hand", "inkwell", "desk drawer", "blotter"],
            "E",
            "The answer must be an item that can absorb ink. Of the above choices, only "
            "blotters are used to absorb ink.",
        ),
        _shot(
            "What home entertainment equipment requires cable?",
            ["radio shack", "substation", "television", "cabinet"],
            "C",
            "The answer must require cable. Of the above choices, only television requires cable.",
        ),
        _shot(
            "The fox walked from the city into the forest, what was it looking for?",
            ["pretty flowers", "hen house", "natural habitat", "storybook"],
            "B",
            "The answer must be something in the forest. Of the above choices, only natural habitat is in the forest.",
        ),
        _shot(
            "Sammy wanted to go to where the people were. Where might he go?",
            ["populated areas", "race track", "desert", "apartment", "roadblock"],
            "A",
            "The answer must be a place with a lot of people. Of the above choices, only "
            "populated areas have a lot of people.",
        ),
        _shot(
            "Where do you put your grapes just before checking out?",
            ["mouth", "grocery cart", "super market", "fruit basket", "fruit market"],
            "B",
            "The answer should be the place where grocery items are placed before checking "
            "out. Of the above choices, grocery cart makes the most sense for holding "
            "grocery items.",
        ),
        _shot(
            "Google Maps and other highway and street GPS services have replaced what?",
            ["united states", "mexico", "countryside", "atlas"],
            "D",
            "The answer must be something that used to do what Google Maps and GPS services "
            "do, which is to give directions. Of the above choices, only atlases are used to "
            "give directions.",
        ),
        _shot(
            "Before getting a divorce, what did the wife feel who was doing all the work?",
            ["harder", "anguish", "bitterness", "tears", "sadness"],
            "C",
            "The answer should be the feeling of someone getting divorced who was doing all "
            "the work. Of the above choices, the closest feeling is bitterness.",
        ),
    ]
