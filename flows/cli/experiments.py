"""``avff cv`` and ``avff ablate``: flags -> CVConfig / AblationConfig -> the flows (picked up by flows.cli).

Both take every ``avff train`` flag (and ``--config``) for the training run they repeat, except
``--fold`` and ``--log-checkpoints``, which they set per run themselves, e.g.::

    avff cv --data ./data/shards --out ./data/cv --folds 0 1 2 3 4 --class-weight prior
    avff ablate --data ./data/shards --out ./data/ablation --seeds 0 1 2 \\
        --variant 'concat={"fusion": "avff_concat"}' --variant 'video={"fusion": "video_only"}'
"""

from __future__ import annotations

import json
from pathlib import Path

from flows.cli.train import add_train_arguments, checked_train_config

_PER_RUN = ("fold", "log_checkpoints")  # TrainSettings fields cv and ablate set for each child run


def _add_cv(sub) -> None:
    p = sub.add_parser("cv", help="grouped k-fold cross-validation (train+val pooled, test untouched)")
    add_train_arguments(p, skip=_PER_RUN)
    p.add_argument("--folds", type=int, nargs="+", default=None, help="default: every fold of the manifest")
    p.add_argument(
        "--max-parallel", type=int, default=1, help="folds at once (Prefect thread pool; default: %(default)s)"
    )
    p.add_argument("--log-checkpoints", action="store_true", help="log each fold's checkpoints to MLflow")


def _cv(args) -> int:
    train, status = checked_train_config(args, "cv")
    if train is None:
        return status
    from flows.experiments import CVConfig, cv_avff, fold_jobs

    try:  # unknown or unusable folds: refused here, not as a failed flow run
        config = CVConfig(train=train, folds=args.folds, max_parallel=args.max_parallel,
                          log_checkpoints=args.log_checkpoints)  # fmt: skip
        fold_jobs(config)
    except ValueError as e:
        return _refused("cv", e)
    print(json.dumps(cv_avff(config), indent=2, default=str))
    return 0


def _refused(command: str, error: Exception) -> int:
    from flows.cli.console import one_line
    from flows.cli.fields import refused

    return refused(command, one_line(error))


def _variants(items: list[str], path: str | None) -> dict[str, dict]:
    """{name: overrides} of --variants-file and --variant; a ValueError naming the one that cannot be read."""
    try:
        out: dict[str, dict] = json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError) as e:
        raise ValueError(f"--variants-file {path}: {e}") from None
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--variant needs NAME=JSON, got {item!r}")
        try:
            out[name] = json.loads(value)
        except ValueError as e:
            raise ValueError(f"--variant {name}: not JSON ({e}): {value!r}") from None
    if not out:
        raise ValueError("give at least one --variant NAME=JSON or --variants-file")
    return out


def _add_ablate(sub) -> None:
    p = sub.add_parser("ablate", help="compare named variants of a training config over seeds")
    add_train_arguments(p, skip=_PER_RUN)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a variant: TrainSettings overrides, e.g. 'focal={\"loss\": \"focal\"}' ('base={}' for the base)",
    )
    p.add_argument("--variants-file", default=None, help="a JSON object name -> overrides (merged with --variant)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="(default: %(default)s)")
    p.add_argument(
        "--split", choices=["val", "test"], default="val", help="where the table compares (default: %(default)s)"
    )
    p.add_argument("--level", choices=["video", "clip"], default="video", help="(default: %(default)s)")
    p.add_argument(
        "--max-parallel", type=int, default=1, help="runs at once (Prefect thread pool; default: %(default)s)"
    )
    p.add_argument("--log-checkpoints", action="store_true", help="log each run's checkpoints to MLflow")


def _ablate(args) -> int:
    base, status = checked_train_config(args, "ablate")
    if base is None:
        return status
    from flows.experiments import AblationConfig, ablate_avff, ablation_jobs

    try:  # every variant x seed validated here: a bad variant is refused, not a failed flow run
        config = AblationConfig(base=base, variants=_variants(args.variant, args.variants_file),
                                seeds=args.seeds, split=args.split, level=args.level, max_parallel=args.max_parallel,
                                log_checkpoints=args.log_checkpoints)  # fmt: skip
        ablation_jobs(config)
    except ValueError as e:
        return _refused("ablate", e)
    out = ablate_avff(config)
    print(out["table"])
    print(json.dumps({k: v for k, v in out.items() if k != "table"}, indent=2, default=str))
    return 0


COMMANDS = {"cv": (_add_cv, _cv), "ablate": (_add_ablate, _ablate)}
