"""DROP shot targets and answer clean-up around lm-eval's DROP scoring.

lm-eval's drop template renders shots with ``answer|join(',')``, which on the hub schema
(answer = {number, date, spans}) joins the dict's keys and shows every shot's answer as
"number,date,spans"; doc_to_target renders the answer itself.

Generation stops at the end of the line rather than at "." (lm-eval's stop), which cut
decimal answers ("2.5" -> "2"). A sentence-final "." is then dropped before scoring: DROP's
normaliser removes punctuation inside any token that is not a number, so "2.5." would
become "25".
"""

from lm_eval.tasks.drop.utils import parse_answer
from lm_eval.tasks.drop.utils import process_results as drop_process_results


def doc_to_target(doc: dict) -> str:
    return ", ".join(parse_answer(doc["answer"]))


def clean_prediction(response: str) -> str:
    line = response.strip().split("\n")[0].strip()
    return line[:-1].rstrip() if line.endswith(".") else line


def process_results(doc: dict, results: list[str]) -> dict:
    return drop_process_results(doc, [clean_prediction(results[0])])
