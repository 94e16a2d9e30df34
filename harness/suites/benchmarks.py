"""The model cards' benchmarks: their names, the suite member each runs as, the metric reported.

Kept apart from the registry (which reads task YAMLs through lm-eval) so that tables and plots
can name a row "MMLU" rather than "llama3_mmlu" without importing lm-eval.
"""

from __future__ import annotations

from harness.results.schema import Card

# Card benchmark -> (suite member: task or group, lm-eval result key the card number is
# compared with). Order is the card's.
BENCHMARKS = {
    "llama3_base": [
        ("MMLU", "llama3_mmlu", "acc,macro"),
        ("AGIEval English", "llama3_agieval_en", "acc,none"),
        ("CommonSenseQA", "llama3_commonsense_qa", "acc,none"),
        ("Winogrande", "llama3_winogrande", "acc,none"),
        ("BIG-Bench Hard", "llama3_bbh_cot", "exact_match,get-answer"),
        ("ARC-Challenge", "llama3_arc_challenge", "acc,none"),
        ("TriviaQA-Wiki", "llama3_triviaqa_wiki", "exact_match,remove_whitespace"),
        ("SQuAD", "llama3_squad_v2", "exact_match_hasans,none"),
        ("QuAC", "llama3_quac", "f1,none"),
        ("BoolQ", "llama3_boolq", "acc,none"),
        ("DROP", "llama3_drop", "f1,none"),
    ],
    "llama3_instruct": [
        ("MMLU", "llama3_mmlu_instruct", "exact_match,macro"),
        ("GPQA", "llama3_gpqa_main", "acc,none"),
        ("HumanEval", "llama3_humaneval", "pass@1,create_test"),
        ("GSM-8K", "llama3_gsm8k_cot", "exact_match,strict-match"),
        ("MATH", "llama3_math", "exact_match,none"),
    ],
}


def card_benchmarks(card: Card | None = None) -> dict[str, tuple[str, str]]:
    """{task: (benchmark name, the metric the card reports)}, in card order: the run's card
    first (its names win), then the Llama 3 suites'."""
    out = {s.task: (s.benchmark, s.metric) for s in card.scores} if card is not None else {}
    for rows in BENCHMARKS.values():
        for name, member, metric in rows:
            out.setdefault(member, (name, metric))
    return out
