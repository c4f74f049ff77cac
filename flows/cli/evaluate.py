"""``avff evaluate --data DIR [--model avff-dfdc@champion]``: the evaluate-avff flow from the shell."""

from __future__ import annotations

import json

from flows.preflight import MODEL_FORMS


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a registered model on a DFDC-format folder (overall + per manipulation)",
                       description="Score every video of a DFDC-format folder with a registered model; metrics "
                       "overall and per manipulation type beside the baselines, logged to MLflow. Verdicts use the "
                       "model's own threshold and calibration (as avff predict); a folder of one class reports its "
                       "detection or false-positive rate and names the metrics undefined on it.")  # fmt: skip
    p.add_argument("--data", required=True, help="DFDC-format folder (dfdc_train_part_*/ or one with metadata.json)")
    p.add_argument("--model", default="avff-dfdc@champion", help=f"{MODEL_FORMS} (default: %(default)s)")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000")
    p.add_argument(
        "--experiment", default="avff", help="MLflow experiment of the evaluation run (default: %(default)s)"
    )
    p.add_argument(
        "--prior",
        type=float,
        default=None,
        help="FAKE fraction of the prior baseline (default: the model's training data)",
    )
    p.add_argument("--out", default=None, help="folder for evaluation.md and scores.json (default: a temp dir)")
    p.add_argument("--probes", type=int, default=0,
                   help="shortcut probes (audio shifted, silence added/cut, re-encoded) on this many REAL videos "
                   "(default: %(default)s)")  # fmt: skip


def _evaluate(args) -> int:
    from flows.cli.fields import refused
    from flows.cli.registry import require_registered
    from flows.preflight import ConfigError, check_evaluate_inputs

    try:  # before the flow's import and its run: a refused command leaves no failed run behind
        check_evaluate_inputs(args.data, args.model, args.out)
        require_registered(args.model, args.tracking_uri)
    except ConfigError as e:
        return refused("evaluate", str(e))
    from flows.cli.console import flow_console

    flow_console(args)
    from flows.evaluate import EvaluateConfig, evaluate_avff

    cfg = EvaluateConfig(data=args.data, model=args.model, tracking_uri=args.tracking_uri,
                         experiment=args.experiment, prior=args.prior, out=args.out, probes=args.probes)  # fmt: skip
    result = evaluate_avff(cfg)
    print(open(f"{result['out']}/evaluation.md").read())
    print(json.dumps({"run_id": result["run_id"], "run_url": result["run_url"], "model_uri": result["model_uri"],
                      "out": result["out"]}))  # fmt: skip
    return 0


COMMANDS = {"evaluate": (_add_evaluate, _evaluate)}
