"""``avff stack up|down|status|env``: the local Prefect + MLflow (+ Ray) stack of deployments/stack.py.

The one CLI module that imports deployments/ (the layering test allows it here only).
"""

from __future__ import annotations


def _add_stack(sub) -> None:
    from deployments.stack import add_arguments

    add_arguments(sub.add_parser("stack", help="start/stop the local Prefect + MLflow (+ Ray) stack"))


def _stack(args) -> int:
    from deployments.stack import run

    return run(args, prog="avff stack")


COMMANDS = {"stack": (_add_stack, _stack)}
