"""`harness` command line: one sub-command per module, each imported only when used.

Each command module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Importing
lazily keeps `harness compare | gate | report` free of vllm and torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harness.errors import EXIT_BAD_INPUT, UsageError

COMMANDS = {
    "run": ("harness.evaluate.runner", "evaluate every variant of a config (default: the CPU demo)"),
    "compare": ("harness.analysis.comparison", "rebuild a run's comparison table from its results folder"),
    "gate": ("harness.analysis.gate", "pass/fail a run against regression thresholds (exit 0/1/2)"),
    "report": ("harness.render.report", "write report.md, report.html and PNG plots for a run"),
    "tasks": ("harness.suites.registry", "list the benchmark suites and their settings"),
    "data": ("harness.suites.data", "check or pull the datasets a suite needs"),
    "drift": ("harness.evaluate.drift", "KL divergence, top-1 agreement and perplexity of each variant vs the baseline"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    name = next((a for a in argv if not a.startswith("-")), None)
    for command, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        # Only the chosen command's module is imported (and may pull heavy dependencies).
        if command == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.main)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
