"""``avff evaluate --data DIR [--model avff-dfdc@latest]``: the evaluate-avff flow from the shell."""

from __future__ import annotations

import json


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a registered model on a DFDC-format folder (overall + per manipulation)")
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="avff-dfdc@latest")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--experiment", default="avff-eval")
    p.add_argument("--prior", type=float, default=None, help="the training split's video-level FAKE fraction (prior baseline; unknown when omitted)")
    p.add_argument("--out", default=None)


def _evaluate(args) -> int:
    from flows.evaluate import EvaluateConfig, evaluate_avff

    cfg = EvaluateConfig(data=args.data, model=args.model, tracking_uri=args.tracking_uri,
                         experiment=args.experiment, prior=args.prior, out=args.out)  # fmt: skip
    result = evaluate_avff(cfg)
    print(open(f"{result['out']}/evaluation.md").read())
    print(json.dumps({"run_id": result["run_id"], "out": result["out"]}))
    return 0


COMMANDS = {"evaluate": (_add_evaluate, _evaluate)}
