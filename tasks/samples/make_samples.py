"""Write the authored sample documents of tasks/samples in hub layout.

Every document here was written for this project to exercise the harness; none is copied
from a benchmark. Each dataset folder gets a README with the hub `configs:` block and the
real dataset's features, so `datasets.load_dataset(<folder>, <config>)` yields the real
schema. ARC and GSM8K samples are hand-written JSONL (not produced here).

    python tasks/samples/make_samples.py
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
NOTICE = "Samples written for this project to exercise the harness; not benchmark data; scores on them mean nothing."

S = {"dtype": "string"}


def write(repo: str, configs: dict[str, dict[str, list[dict]]], features: list[dict], note: str = "") -> None:
    folder = HERE / repo
    front = {"configs": [], "dataset_info": []}
    for config, splits in configs.items():
        files = []
        for split, rows in splits.items():
            rel = f"{config}/{split}.jsonl"
            (folder / config).mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
            files.append({"split": split, "path": rel})
        front["configs"].append({"config_name": config, "data_files": files})
        front["dataset_info"].append({"config_name": config, "features": features})
    # No YAML anchors: each feature is spelled out where it is used.
    dumper = type("NoAliases", (yaml.SafeDumper,), {"ignore_aliases": lambda *_: True})
    text = yaml.dump(front, Dumper=dumper, sort_keys=False, allow_unicode=True)
    (folder / "README.md").write_text(
        f"---\n{text}---\n\n# {repo} (samples)\n\n{NOTICE}\n\n"
        f"Same schema as the hub dataset `{repo}`.{(' ' + note) if note else ''}\n",
        "utf-8",
    )


def seq(feature):
    return {"list": feature["dtype"]} if "dtype" in feature else {"list": feature}


# ------------------------------------------------------------------------------ MMLU
MMLU_SUBJECTS = [
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "business_ethics",
    "clinical_knowledge",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_medicine",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "econometrics",
    "electrical_engineering",
    "elementary_mathematics",
    "formal_logic",
    "global_facts",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_european_history",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_mathematics",
    "high_school_microeconomics",
    "high_school_physics",
    "high_school_psychology",
    "high_school_statistics",
    "high_school_us_history",
    "high_school_world_history",
    "human_aging",
    "human_sexuality",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "machine_learning",
    "management",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "moral_disputes",
    "moral_scenarios",
    "nutrition",
    "philosophy",
    "prehistory",
    "professional_accounting",
    "professional_law",
    "professional_medicine",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
    "virology",
    "world_religions",
]

MMLU_DOCS = [
    ("What is 7 times 8?", ["54", "56", "58", "64"], 1),
    ("Which word is a synonym of 'rapid'?", ["slow", "heavy", "quick", "quiet"], 2),
    ("How many sides does a hexagon have?", ["6", "5", "8", "7"], 0),
    ("Which of these is a primary color of light?", ["brown", "pink", "gray", "green"], 3),
    ("What is the next number: 2, 4, 8, 16, ...?", ["18", "24", "32", "20"], 2),
    ("Which month has the fewest days in a common year?", ["February", "April", "June", "May"], 0),
    ("What does a thermometer measure?", ["mass", "temperature", "length", "time"], 1),
]


def mmlu() -> None:
    configs = {}
    for subject in MMLU_SUBJECTS:
        rows = [{"question": q, "subject": subject, "choices": c, "answer": a} for q, c, a in MMLU_DOCS]
        configs[subject] = {"dev": rows[:5], "validation": rows[5:6], "test": rows[5:]}
    features = [
        {"name": "question", **S},
        {"name": "subject", **S},
        {"name": "choices", "list": "string"},
        {"name": "answer", "dtype": {"class_label": {"names": dict(enumerate("ABCD"))}}},
    ]
    write("cais/mmlu", configs, features, "Every subject config holds the same 7 generic questions (5 dev, 2 test).")


# ------------------------------------------------------------------------------ AGIEval
AGIEVAL = ["aqua-rat", "logiqa-en", "lsat-ar", "lsat-lr", "lsat-rc", "sat-en", "sat-en-without-passage", "sat-math"]
AGIEVAL_DOCS = [
    (
        "A bus leaves at 9:00 and arrives at 11:30. ",
        "How long is the trip?",
        ["(A)1.5 hours", "(B)2 hours", "(C)2.5 hours", "(D)3 hours", "(E)3.5 hours"],
        "C",
    ),
    (
        "Every member of the chess club also plays cards. Lee is in the chess club. ",
        "Which statement must be true?",
        ["(A)Lee plays cards.", "(B)Lee dislikes chess.", "(C)Everyone plays chess.", "(D)Lee leads the club."],
        "A",
    ),
    (None, "If 3x + 2 = 14, what is x?", ["(A)2", "(B)3", "(C)4", "(D)5"], "C"),
]


def agieval_query(passage, question, options):
    return (
        f"{passage or ''}Q: {question} Answer Choices: {' '.join(options)}\n"
        f"A: Among A through {'ABCDE'[len(options) - 1]}, the answer is"
    )


def agieval() -> None:
    features = [{"name": "query", **S}, {"name": "choices", "list": "string"}, {"name": "gold", "list": "int64"}]
    rows = [{"query": agieval_query(p, q, o), "choices": o, "gold": ["ABCDE".index(a)]} for p, q, o, a in AGIEVAL_DOCS]
    for subset in AGIEVAL:
        write(f"hails/agieval-{subset}", {"default": {"test": rows}}, features)
    # AGIEval's few_shot_prompts.csv layout: one column per subset, rows "sample k" holding a
    # Python dict literal, then "explanation k".
    import csv
    import io

    shots = [
        {
            "passage": None,
            "question": "What is 10 percent of 250?",
            "options": ["(A)20", "(B)25", "(C)30", "(D)35", "(E)40"],
            "label": "B",
            "answer": None,
            "other": None,
        },
        {
            "passage": "All owls in the zoo are awake at night. Pip is an owl in the zoo. ",
            "question": "What follows?",
            "options": [
                "(A)Pip is awake at night.",
                "(B)Pip sleeps at night.",
                "(C)Pip is not an owl.",
                "(D)The zoo has no owls.",
            ],
            "label": "A",
            "answer": None,
            "other": None,
        },
        {
            "passage": None,
            "question": "Which number is prime?",
            "options": ["(A)21", "(B)27", "(C)29", "(D)33"],
            "label": "C",
            "answer": None,
            "other": None,
        },
        {
            "passage": None,
            "question": "What is 2 cubed?",
            "options": ["(A)4", "(B)6", "(C)8", "(D)9"],
            "label": "C",
            "answer": None,
            "other": None,
        },
        {
            "passage": None,
            "question": "A square has side 3. What is its area?",
            "options": ["(A)6", "(B)9", "(C)12", "(D)3"],
            "label": "B",
            "answer": None,
            "other": None,
        },
    ]
    columns = ["lsat-ar", "lsat-lr", "lsat-rc", "logiqa-en", "sat-math", "sat-en", "aqua-rat"]
    per = {c: (5 if c in ("sat-math", "aqua-rat") else 3) for c in columns}
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([""] + columns)
    for k in range(5):
        w.writerow([f"sample {k + 1}"] + [repr(shots[k]) if k < per[c] else "" for c in columns])
        w.writerow([f"explanation {k + 1}"] + ["" for _ in columns])
    target = HERE / "ruixiangcui/AGIEval/data/few_shot_prompts.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(out.getvalue(), "utf-8")
    (HERE / "ruixiangcui/AGIEval/README.md").write_text(
        f"# ruixiangcui/AGIEval few_shot_prompts.csv (samples)\n\n{NOTICE}\n\n"
        "Same layout as data/few_shot_prompts.csv of github.com/ruixiangcui/AGIEval (a "
        "GitHub file, not a hub dataset); read by tasks/llama3_base/agieval/fewshot.py.\n",
        "utf-8",
    )


# ------------------------------------------------------------------------------ CSQA
def commonsense_qa() -> None:
    docs = [
        ("Where would you keep milk cold?", "milk", ["oven", "refrigerator", "closet", "garage", "mailbox"], "B"),
        ("What do you use to cut paper?", "cut", ["spoon", "pillow", "scissors", "cup", "sock"], "C"),
        ("Where do people usually sleep?", "sleep", ["bed", "bathtub", "stove", "car roof", "desk"], "A"),
        ("What might you wear when it rains?", "rain", ["sandals", "sunglasses", "scarf", "raincoat", "tie"], "D"),
        ("Where can you borrow books?", "borrow", ["bakery", "gym", "library", "bank", "zoo"], "C"),
    ]
    # Train holds 7 questions of its own: the letter task draws its 7 shots from train.
    train_docs = [
        ("What do you drink from?", "drink", ["shoe", "cup", "lamp", "rug", "coin"], "B"),
        ("Where does a fish live?", "fish", ["tree", "desert", "attic", "water", "oven"], "D"),
        ("What tells you the time?", "time", ["clock", "spoon", "brick", "leaf", "soap"], "A"),
        ("What do you write with?", "write", ["pillow", "pen", "grape", "boot", "bell"], "B"),
        ("Where do cars park?", "park", ["sink", "cloud", "garage", "nest", "drawer"], "C"),
        ("What keeps you dry in rain?", "dry", ["sponge", "fork", "net", "umbrella", "fan"], "D"),
        ("What do bees make?", "bees", ["honey", "silk", "glass", "paper", "salt"], "A"),
    ]

    def rows_of(docs, prefix):
        return [
            {
                "id": f"{prefix}_{i:03d}",
                "question": q,
                "question_concept": c,
                "choices": {"label": list("ABCDE"), "text": t},
                "answerKey": a,
            }
            for i, (q, c, t, a) in enumerate(docs)
        ]

    rows = rows_of(docs, "sample_csqa")
    features = [
        {"name": "id", **S},
        {"name": "question", **S},
        {"name": "question_concept", **S},
        {"name": "choices", "struct": [{"name": "label", "list": "string"}, {"name": "text", "list": "string"}]},
        {"name": "answerKey", **S},
    ]
    write(
        "tau/commonsense_qa",
        {"default": {"train": rows_of(train_docs, "sample_csqa_train"), "validation": rows}},
        features,
    )


# ------------------------------------------------------------------------------ Winogrande
def winogrande() -> None:
    docs = [
        ("The cup fell off the table because the _ was wobbly.", "cup", "table", "2"),
        ("Anna gave Beth a gift because _ was kind.", "Anna", "Beth", "1"),
        ("The ice melted faster than the rock because the _ was soft.", "ice", "rock", "1"),
        ("Sam could not lift the box with the bag because the _ was heavy.", "box", "bag", "1"),
        ("The dog chased the cat until the _ climbed a tree.", "dog", "cat", "2"),
        ("Mia asked Nora for help since _ knew the way.", "Mia", "Nora", "2"),
        ("The bread was fresher than the cake because the _ was baked today.", "bread", "cake", "1"),
        ("The river was wider than the stream, so the _ needed a bridge.", "river", "stream", "1"),
    ]
    rows = [{"sentence": s, "option1": a, "option2": b, "answer": y} for s, a, b, y in docs]
    features = [{"name": "sentence", **S}, {"name": "option1", **S}, {"name": "option2", **S}, {"name": "answer", **S}]
    write(
        "allenai/winogrande",
        {"winogrande_l": {"train": rows[:6], "validation": rows[6:]}},
        features,
        "Only config winogrande_l (the one llama3_winogrande reads).",
    )


# ------------------------------------------------------------------------------ BBH
BBH = [
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
]


def bbh() -> None:
    rows = [
        {"input": "True and not False is", "target": "True"},
        {"input": "I have two apples and one pear. How many fruits do I have?", "target": "3"},
    ]
    features = [{"name": "input", **S}, {"name": "target", **S}]
    write(
        "SaylorTwift/bbh",
        {t: {"test": rows} for t in BBH},
        features,
        "Every subset config holds the same 2 generic documents.",
    )


# ------------------------------------------------------------------------------ TriviaQA
def trivia_qa() -> None:
    # Most TriviaQA questions end with "?" (the template must not add a second); some do not.
    qa = [
        ("Which planet is known as the red planet?", "Mars", ["Mars", "Planet Mars"]),
        ("What is the largest ocean on Earth?", "Pacific Ocean", ["Pacific Ocean", "Pacific"]),
        ("How many legs does a spider have", "8", ["8", "Eight"]),
        ("Which metal is liquid at room temperature?", "Mercury", ["Mercury", "Quicksilver"]),
        ("What color do you get by mixing blue and yellow?", "Green", ["Green"]),
        ("Which animal is called the king of the jungle?", "Lion", ["Lion", "Lions"]),
        ("Which US city is home to the Gateway Arch?", "St. Louis", ["St. Louis", "Saint Louis", "St Louis"]),
        ("What is frozen water called?", "Ice", ["Ice"]),
        ("In which continent is Egypt", "Africa", ["Africa"]),
        ("How many days are in a week?", "7", ["7", "Seven"]),
        ("What gas do people breathe in to live?", "Oxygen", ["Oxygen", "O2"]),
    ]

    def row(i, q, v, aliases):
        return {
            "question": q,
            "question_id": f"sample_tqa_{i}",
            "question_source": "samples",
            "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
            "search_results": {
                "description": [],
                "filename": [],
                "rank": [],
                "title": [],
                "url": [],
                "search_context": [],
            },
            "answer": {
                "aliases": aliases,
                "normalized_aliases": [a.lower() for a in aliases],
                "matched_wiki_entity_name": "",
                "normalized_matched_wiki_entity_name": "",
                "normalized_value": v.lower(),
                "type": "WikipediaEntity",
                "value": v,
            },
        }

    rows = [row(i, *x) for i, x in enumerate(qa)]
    ls = {"list": "string"}
    features = [
        {"name": "question", **S},
        {"name": "question_id", **S},
        {"name": "question_source", **S},
        {
            "name": "entity_pages",
            "struct": [{"name": n, **ls} for n in ("doc_source", "filename", "title", "wiki_context")],
        },
        {
            "name": "search_results",
            "struct": [
                {"name": "description", **ls},
                {"name": "filename", **ls},
                {"name": "rank", "list": "int32"},
                {"name": "title", **ls},
                {"name": "url", **ls},
                {"name": "search_context", **ls},
            ],
        },
        {
            "name": "answer",
            "struct": [
                {"name": "aliases", **ls},
                {"name": "normalized_aliases", **ls},
                {"name": "matched_wiki_entity_name", **S},
                {"name": "normalized_matched_wiki_entity_name", **S},
                {"name": "normalized_value", **S},
                {"name": "type", **S},
                {"name": "value", **S},
            ],
        },
    ]
    write(
        "mandarjoshi/trivia_qa",
        {"rc.wikipedia.nocontext": {"train": rows[:6], "validation": rows[6:]}},
        features,
        "Only config rc.wikipedia.nocontext.",
    )


# ------------------------------------------------------------------------------ SQuAD v2
def squad_v2() -> None:
    p1 = (
        "The town of Millbrook was founded in 1820 by farmers. Its old mill, built in 1835, "
        "still grinds wheat every autumn."
    )
    p2 = "Glass is made by heating sand until it melts. Workers then shape the hot glass before it cools and hardens."
    p3 = "The library opens at nine in the morning and closes at six in the evening."

    def row(i, title, ctx, q, answer):
        start = ctx.find(answer) if answer else -1
        return {
            "id": f"sample_sq_{i}",
            "title": title,
            "context": ctx,
            "question": q,
            "answers": {"text": [answer] if answer else [], "answer_start": [start] if answer else []},
        }

    train = [
        row(0, "Millbrook", p1, "When was Millbrook founded?", "1820"),
        row(1, "Millbrook", p1, "What does the mill grind?", "wheat"),
        row(2, "Millbrook", p1, "Who was the first mayor?", ""),
    ]
    val = [
        row(3, "Glass", p2, "What is glass made from?", "sand"),
        row(4, "Glass", p2, "What happens to glass when it cools?", "hardens"),
        row(5, "Glass", p2, "Who invented glass?", ""),
        row(6, "Library", p3, "When does the library close?", "six in the evening"),
    ]
    features = [
        {"name": "id", **S},
        {"name": "title", **S},
        {"name": "context", **S},
        {"name": "question", **S},
        {"name": "answers", "struct": [{"name": "text", "list": "string"}, {"name": "answer_start", "list": "int32"}]},
    ]
    write("rajpurkar/squad_v2", {"squad_v2": {"train": train, "validation": val}}, features)


# ------------------------------------------------------------------------------ QuAC
def quac() -> None:
    def dialogue(i, title, section, background, context, turns):
        qs = [t[0] for t in turns]
        ans = [t[1] for t in turns]
        return {
            "dialogue_id": f"sample_quac_{i}",
            "wikipedia_page_title": title,
            "background": background,
            "section_title": section,
            "context": context + " CANNOTANSWER",
            "turn_ids": [f"sample_quac_{i}_q#{k}" for k in range(len(turns))],
            "questions": qs,
            "followups": [0] * len(turns),
            "yesnos": [2] * len(turns),
            "answers": {
                "texts": [[a] for a in ans],
                "answer_starts": [[(context + " CANNOTANSWER").find(a)] for a in ans],
            },
            "orig_answers": {"texts": ans, "answer_starts": [(context + " CANNOTANSWER").find(a) for a in ans]},
        }

    c1 = (
        "Rosa Vale began painting at age ten. Her first show opened in 1990 in a small "
        "gallery. She later taught art at a city school."
    )
    c2 = (
        "The Blue Harbor band formed in 2001. They released three albums and toured Europe "
        "twice before splitting up in 2012."
    )
    train = [
        dialogue(
            0,
            "Rosa Vale",
            "Early life",
            "Rosa Vale is a painter.",
            c1,
            [
                ("When did she start painting?", "at age ten"),
                ("When was her first show?", "Her first show opened in 1990"),
                ("Did she have children?", "CANNOTANSWER"),
            ],
        )
    ]
    val = [
        dialogue(
            1,
            "Blue Harbor",
            "History",
            "Blue Harbor is a rock band.",
            c2,
            [
                ("When did the band form?", "The Blue Harbor band formed in 2001."),
                ("How many albums did they make?", "They released three albums"),
                ("Who was the drummer?", "CANNOTANSWER"),
            ],
        )
    ]
    ls = {"list": "string"}
    features = [
        {"name": "dialogue_id", **S},
        {"name": "wikipedia_page_title", **S},
        {"name": "background", **S},
        {"name": "section_title", **S},
        {"name": "context", **S},
        {"name": "turn_ids", **ls},
        {"name": "questions", **ls},
        {"name": "followups", "list": {"class_label": {"names": {0: "y", 1: "n", 2: "m"}}}},
        {"name": "yesnos", "list": {"class_label": {"names": {0: "y", 1: "n", 2: "x"}}}},
        {
            "name": "answers",
            "struct": [
                {"name": "texts", "list": {"list": "string"}},
                {"name": "answer_starts", "list": {"list": "int32"}},
            ],
        },
        {"name": "orig_answers", "struct": [{"name": "texts", **ls}, {"name": "answer_starts", "list": "int32"}]},
    ]
    write(
        "allenai/quac",
        {"plain_text": {"train": train, "validation": val}},
        features,
        "Config plain_text, as in the hub's refs/convert/parquet revision.",
    )


# ------------------------------------------------------------------------------ BoolQ
def boolq() -> None:
    docs = [
        ("Frogs are amphibians that can live both in water and on land.", "can frogs live on land", 1),
        ("The Moon has no air, so there is no wind there.", "is there wind on the moon", 0),
        ("Penguins are birds, but they cannot fly; they swim instead.", "can penguins fly", 0),
        ("Copper is a metal that conducts electricity well.", "does copper conduct electricity", 1),
    ]
    rows = [{"question": q, "passage": p, "idx": i, "label": y} for i, (p, q, y) in enumerate(docs)]
    features = [
        {"name": "question", **S},
        {"name": "passage", **S},
        {"name": "idx", "dtype": "int32"},
        {"name": "label", "dtype": {"class_label": {"names": {0: "False", 1: "True"}}}},
    ]
    write("aps/super_glue", {"boolq": {"validation": rows}}, features, "Only config boolq, validation split.")


# ------------------------------------------------------------------------------ DROP
def drop() -> None:
    def row(i, passage, q, number="", spans=(), date=("", "", "")):
        ans = {"number": number, "date": {"day": date[0], "month": date[1], "year": date[2]}, "spans": list(spans)}
        return {
            "section_id": f"sample_drop_s{i // 2}",
            "query_id": f"sample_drop_q{i}",
            "passage": passage,
            "question": q,
            "answers_spans": {"spans": list(spans) or [number], "types": ["span" if spans else "number"]},
            "answer": ans,
            "validated_answers": {"number": [number], "date": [ans["date"]], "spans": [list(spans)]},
        }

    p1 = (
        "The home team scored a 12-yard touchdown in the first quarter and a 40-yard field "
        "goal in the second. The visitors answered with a 7-yard run."
    )
    p2 = "In 1950 the village had 300 people. By 1970 it had grown to 450, and by 1990 it had 600 residents."
    p3 = "The market sold apples, pears and plums; apples sold best and plums sold least."
    train = [
        row(0, p1, "How many yards was the field goal?", number="40"),
        row(1, p1, "Which team ran for 7 yards?", spans=["The visitors"]),
        row(2, p3, "Which fruit sold best?", spans=["apples"]),
        row(3, p3, "How many kinds of fruit did the market sell?", number="3"),
    ]
    p4 = "It rained for 2.5 hours on Monday and for 4 hours on Tuesday."
    val = [
        row(4, p2, "How many more people lived in the village in 1990 than in 1950?", number="300"),
        row(5, p2, "In which year did the village have 450 people?", spans=["1970"]),
        row(6, p4, "How many hours did it rain on Monday?", number="2.5"),
    ]
    date = {"struct": [{"name": "day", **S}, {"name": "month", **S}, {"name": "year", **S}]}
    answer = {"struct": [{"name": "number", **S}, {"name": "date", **date}, {"name": "spans", "list": "string"}]}
    features = [
        {"name": "section_id", **S},
        {"name": "query_id", **S},
        {"name": "passage", **S},
        {"name": "question", **S},
        {"name": "answers_spans", "struct": [{"name": "spans", "list": "string"}, {"name": "types", "list": "string"}]},
        {"name": "answer", **answer},
        {
            "name": "validated_answers",
            "struct": [
                {"name": "number", "list": "string"},
                {"name": "date", "list": date["struct"]},
                {"name": "spans", "list": {"list": "string"}},
            ],
        },
    ]
    write("EleutherAI/drop", {"default": {"train": train, "validation": val}}, features)


# ------------------------------------------------------------------------------ GPQA
def gpqa() -> None:
    docs = [
        ("Which particle carries a negative electric charge?", "electron", "proton", "neutron", "photon"),
        ("What is the chemical symbol for sodium?", "Na", "So", "Sd", "S"),
        ("Which organelle makes most of a cell's ATP?", "mitochondrion", "nucleus", "ribosome", "vacuole"),
    ]
    rows = [
        {
            "Question": q,
            "Correct Answer": c,
            "Incorrect Answer 1": a,
            "Incorrect Answer 2": b,
            "Incorrect Answer 3": d,
            "Explanation": "Written for the harness samples.",
            "Subdomain": "samples",
            "Record ID": f"sample_gpqa_{i}",
            "High-level domain": "Physics",
        }
        for i, (q, c, a, b, d) in enumerate(docs)
    ]
    features = [{"name": n, **S} for n in rows[0]]
    write(
        "Idavidrein/gpqa",
        {"gpqa_main": {"train": rows}},
        features,
        "Only the columns the harness reads (the hub CSV has 78).",
    )


# ------------------------------------------------------------------------------ MATH
def hendrycks_math() -> None:
    configs = [
        "algebra",
        "counting_and_probability",
        "geometry",
        "intermediate_algebra",
        "number_theory",
        "prealgebra",
        "precalculus",
    ]
    rows = [
        {
            "problem": "What is $2 + 3 \\cdot 4$?",
            "level": "Level 1",
            "type": "Prealgebra",
            "solution": "Multiply first: $3 \\cdot 4 = 12$, so $2 + 12 = \\boxed{14}$.",
        },
        {
            "problem": "Solve for $x$: $5x - 5 = 20$.",
            "level": "Level 2",
            "type": "Algebra",
            "solution": "Add 5 to get $5x = 25$, so $x = \\boxed{5}$.",
        },
    ]
    features = [{"name": n, **S} for n in ("problem", "level", "type", "solution")]
    write(
        "EleutherAI/hendrycks_math",
        {c: {"test": rows} for c in configs},
        features,
        "Test split only (the Minerva shots are fixed in lm-eval).",
    )


if __name__ == "__main__":
    for build in (
        mmlu,
        agieval,
        commonsense_qa,
        winogrande,
        bbh,
        trivia_qa,
        squad_v2,
        quac,
        boolq,
        drop,
        gpqa,
        hendrycks_math,
    ):
        build()
