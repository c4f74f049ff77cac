"""``avff train``: flags generated from :class:`tasks.train.settings.TrainSettings` -> the train-avff flow.

Every field of TrainSettings is a flag, built from the field itself: ``--field-name`` (three
keep their short spellings: ``--out``, ``--model``, ``--override KEY=JSON``), its type, bounds,
choices, default and description; a bool is ``--x`` / ``--no-x``; a nested augmentation
setting takes a preset name or a JSON object (merged into the file's or default value;
``--mixup-alpha`` and ``--cutmix-alpha`` set the two Mixup/CutMix strengths directly).
``--config run.yaml`` reads fields from a YAML or JSON file (the names of the flow's
parameters); flags override it. A flag left out keeps the file's value, else the field's
default, so the CLI has no defaults of its own.

:func:`add_train_arguments` and :func:`checked_train_config` are shared with ``avff cv`` and
``avff ablate`` (flows/cli/experiments.py), so every training setting is a flag of all three.

Bad input fails before any Prefect or MLflow run starts, as one line with exit status 2:
numbers and their bounds, ``--model``, ``--data`` (no manifest: run ``avff ingest`` first) and
the keys of ``--config`` while parsing, in well under a second (this module imports neither
torch nor a flow); the rest (``--monitor``, ``--fusion``, ...) when TrainSettings validates.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterable
from typing import Any

from flows.cli.fields import ConfigFlags, bounded
from tasks.train.settings import AUGMENT_PRESETS, TrainSettings


def _ingest_output(text: str) -> str:
    """An argparse type: a folder ``avff ingest`` wrote (it holds manifest.parquet)."""
    from flows.preflight import ConfigError, require_ingest_output

    try:
        require_ingest_output(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _preset(text: str) -> str:
    """An argparse type: a model preset name of avff_model (``tiny``, ``laptop``, ``paper``)."""
    from flows.preflight import model_presets

    known = model_presets()
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown model preset {text!r}; known: {', '.join(known)}")
    return text


# the spellings users, docs and scripts know for three fields; the two checks that run while parsing
TRAIN_FLAGS = ConfigFlags(TrainSettings, renames={"output_dir": "--out", "model_preset": "--model", "overrides": "--override"},
                          types={"data": _ingest_output, "model_preset": _preset}, presets=AUGMENT_PRESETS)  # fmt: skip
# MixAugment fields with a flag of their own (docs/experiments.md), dest "mix.<field>"
_MIX_FLAGS = ("mixup_alpha", "cutmix_alpha")


def add_train_arguments(p: argparse.ArgumentParser, *, skip: Iterable[str] = ()) -> None:
    """Every TrainSettings field as a flag (except ``skip``: fields the command sets itself), plus ``--config``."""
    g = TRAIN_FLAGS.add_arguments(p, "training settings (tasks/train/settings.py, docs/experiments.md)", skip=skip)
    defaults = TrainSettings.model_fields["mix"].get_default(call_default_factory=True)
    for sub in _MIX_FLAGS:
        g.add_argument("--" + sub.replace("_", "-"), dest=f"mix.{sub}", type=bounded(float, [("ge", 0)]), metavar="ALPHA",
                       default=argparse.SUPPRESS, help=f"mix.{sub}: alpha of the Beta(alpha, alpha) of "
                       f"{sub.split('_')[0]}; 0 off (default: {getattr(defaults, sub)})")  # fmt: skip


def train_fields(args: argparse.Namespace) -> dict[str, Any]:
    """{field name: value} of ``--config`` and the flags (``--mixup-alpha``/``--cutmix-alpha`` merged into mix)."""
    fields = TRAIN_FLAGS.values(args)
    mix = {k.removeprefix("mix."): v for k, v in vars(args).items() if k.startswith("mix.")}
    if mix:
        fields["mix"] = {**TRAIN_FLAGS.nested(fields, "mix"), **mix}
    return fields


def train_config(args: argparse.Namespace) -> TrainSettings:
    """The TrainSettings the file and flags describe (validated)."""
    return TrainSettings.model_validate(train_fields(args))


def _add_train(sub) -> None:
    add_train_arguments(sub.add_parser(
        "train", help="train AVFF on ingested shards, tracked in MLflow",
        description="Train AVFF on the shards of `avff ingest` (a train-avff flow run), track it in MLflow and "
        "register the model if it beats the prior baseline on val.",
    ))  # fmt: skip


def checked_train_config(args, command: str, *, splits: bool = False):
    """(TrainSettings, 0), or (None, 2) after printing why the flags cannot work (before any run starts)."""
    from pydantic import ValidationError

    from flows.preflight import ConfigError

    try:
        # recorded, not printed: import-time warnings (MLflow's about the pyfunc's type hints) are not
        # the user's business; record=True because MLflow resets the filters around its own warning
        with warnings.catch_warnings(record=True):
            config = train_config(args)
            from flows.train import check_inputs

        check_inputs(config, splits=splits)
    except (ValidationError, ConfigError) as e:
        return None, TRAIN_FLAGS.usage_error(command, e)
    return config, 0


def _train(args) -> int:
    config, status = checked_train_config(args, "train", splits=True)
    if config is None:
        return status
    from flows.train import train_avff

    print(json.dumps(train_avff(config), indent=2, default=str))
    return 0


COMMANDS = {"train": (_add_train, _train)}
