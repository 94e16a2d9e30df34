"""DROP shot targets. lm-eval's drop template renders shots with ``answer|join(',')``, which
on the hub schema (answer = {number, date, spans}) joins the dict's keys and shows every
shot's answer as "number,date,spans"; this renders the answer itself."""

from lm_eval.tasks.drop.utils import parse_answer


def doc_to_target(doc: dict) -> str:
    return ", ".join(parse_answer(doc["answer"]))
