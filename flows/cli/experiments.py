"""``avff cv`` and ``avff ablate``: flags -> CVConfig / AblationConfig -> the flows (picked up by flows.cli).

Both take every ``avff train`` flag (and ``--config``) for the training run they repeat, except
``--fold`` and ``--log-checkpoints``, which they set per run themselves, e.g.::

    avff cv --data ./data/shards --out ./data/cv --folds 0 1 2 3 4 --class-weight prior
    avff ablate --data ./data/shards --out ./data/ablation --seeds 0 1 2 \\
        --variant 'concat={"fusion": "avff_concat"}' --variant 'video={"fusion": "video_only"}'

Their own flags are generated from the other fields of :class:`CVConfig` / :class:`AblationConfig`
(tasks/train/experiment_settings.py) as the training flags are from TrainSettings: ``--folds``,
``--max-parallel``, ``--log-checkpoints``; ``--variant NAME=JSON`` (the field ``variants``, one
pair per flag, each checked while parsing), ``--seeds``, ``--split``, ``--level``. One flag is not
a field: ``--variants-file``, a JSON object name -> overrides that ``--variant`` adds to.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.cli.fields import ConfigFlags, refused
from flows.cli.train import add_train_arguments, checked_train_config
from tasks.train.experiment_settings import AblationConfig, CVConfig
from tasks.train.settings import TrainSettings

_PER_RUN = ("fold", "log_checkpoints")  # TrainSettings fields cv and ablate set for each child run


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    """An argparse type: ``NAME=JSON`` -> (name, overrides); a value that is no JSON is refused while parsing."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"needs NAME=JSON, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{name}: not JSON ({e}): {value!r}") from None


CV_FLAGS = ConfigFlags(CVConfig)
ABLATION_FLAGS = ConfigFlags(AblationConfig, renames={"variants": "--variant"}, types={"variants": _variant},
                             file_flag="--variants-file")  # fmt: skip


def _add_cv(sub) -> None:
    p = sub.add_parser("cv", help="grouped k-fold cross-validation (train+val pooled, test untouched)")
    add_train_arguments(p, skip=_PER_RUN)
    CV_FLAGS.add_fields(p.add_argument_group("cross-validation (CVConfig, docs/experiments.md)"), skip=("train",))


def _repeated(config: CVConfig | AblationConfig, field: str) -> CVConfig | AblationConfig:
    """``config`` with its training run logging checkpoints as the experiment says: every child run does
    (fold_jobs, variant_config), and so does the run the parent's params record (--log-checkpoints, default off)."""
    train = getattr(config, field).replace(log_checkpoints=config.log_checkpoints)
    return type(config)(**{**dict(config), field: train})


def cv_config(args: argparse.Namespace, train: TrainSettings) -> CVConfig:
    """The CVConfig the flags describe, repeating ``train`` (validated)."""
    return _repeated(CVConfig(train=train, **CV_FLAGS.overlay({}, args)), "train")


def _cv(args) -> int:
    train, status = checked_train_config(args, "cv")
    if train is None:
        return status
    from pydantic import ValidationError

    from flows.experiments import cv_avff, fold_jobs

    try:
        config = cv_config(args, train)
    except ValidationError as e:
        return CV_FLAGS.usage_error("cv", e)
    try:  # unknown or unusable folds: refused here, not as a failed flow run
        fold_jobs(config)
    except ValueError as e:
        return _refused("cv", e)
    print(json.dumps(cv_avff(config), indent=2, default=str))
    return 0


def _refused(command: str, error: Exception) -> int:
    from flows.cli.console import one_line

    return refused(command, one_line(error))


def _variants_file(path: str | None) -> dict[str, Any]:
    """--variants-file's {name: overrides}; a ValueError naming the file when it cannot be read."""
    if not path:
        return {}
    try:
        variants = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--variants-file {path}: {e}") from None
    if not isinstance(variants, dict):
        raise ValueError(f"--variants-file {path}: needs a JSON object name -> overrides")
    return variants


def ablation_config(args: argparse.Namespace, base: TrainSettings) -> AblationConfig:
    """The AblationConfig the flags describe over ``base`` (validated); ``--variant`` adds to --variants-file."""
    fields = ABLATION_FLAGS.overlay({"variants": _variants_file(args.variants_file)}, args)
    if not fields["variants"]:
        raise ValueError("give at least one --variant NAME=JSON or --variants-file")
    return _repeated(AblationConfig(base=base, **fields), "base")


def _add_ablate(sub) -> None:
    p = sub.add_parser("ablate", help="compare named variants of a training config over seeds")
    add_train_arguments(p, skip=_PER_RUN)
    g = p.add_argument_group("ablation (AblationConfig, docs/experiments.md)")
    ABLATION_FLAGS.add_fields(g, skip=("base",))
    g.add_argument("--variants-file", default=None, metavar="FILE",
                   help="a JSON object name -> overrides (--variant adds to it)")  # fmt: skip


def _ablate(args) -> int:
    base, status = checked_train_config(args, "ablate")
    if base is None:
        return status
    from pydantic import ValidationError

    from flows.experiments import ablate_avff, ablation_jobs

    try:
        config = ablation_config(args, base)
    except ValidationError as e:  # a reserved field or a bad name: the flag that set it
        return ABLATION_FLAGS.usage_error("ablate", e)
    except ValueError as e:  # no variant, or --variants-file unreadable
        return refused("ablate", str(e))
    try:  # every variant x seed validated here: a bad variant is refused, not a failed flow run
        ablation_jobs(config)
    except ValueError as e:
        return _refused("ablate", e)
    out = ablate_avff(config)
    print(out["table"])
    print(json.dumps({k: v for k, v in out.items() if k != "table"}, indent=2, default=str))
    return 0


COMMANDS = {"cv": (_add_cv, _cv), "ablate": (_add_ablate, _ablate)}
