"""``avff train``: flags -> TrainConfig -> the train-avff flow (picked up by flows.cli).

:func:`add_train_arguments` and :func:`train_config` are shared with ``avff cv`` and
``avff ablate`` (flows/cli_experiments.py), so every training switch is a flag of all three.
Experiment switches default to None here: a flag left out keeps TrainConfig's default.

Bad flags fail before any Prefect or MLflow run starts, as one line with exit status 2:
numbers, ``--model`` and ``--data`` (no manifest: run ``avff ingest`` first) while parsing,
in well under a second; the rest (``--monitor``, ``--set``, ...) when TrainConfig validates,
after the flow modules import (seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

# TrainConfig's field -> its flag here, to name the flag in one-line errors
_FLAG_OF = {"model_config": "--model", "model_preset": "--model", "checkpoint_dir": "--out", "overrides": "--override"}


def _at_least(minimum: int | float, kind: type = int):
    """An argparse type: a number >= ``minimum``, refused while parsing (before anything starts)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


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


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad flag as one line (not the usage of 50 flags), exit status 2."""

    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    parser.error = error  # argparse has no hook for this but overriding the method
    return parser


def usage_error(command: str, error: Exception) -> int:
    """Print a config error as one line naming the flag; exit status 2 (like argparse)."""
    errors = getattr(error, "errors", None)
    if callable(errors):  # a pydantic ValidationError: one clause per field
        clauses = []
        for e in errors():
            field = str(e["loc"][0]) if e["loc"] else "config"
            flag = _FLAG_OF.get(field, "--" + field.replace("_", "-"))
            clauses.append(f"{flag}: {e['msg'].removeprefix('Value error, ')}")
        text = "; ".join(clauses)
    else:
        text = " ".join(str(error).split())
    print(f"avff {command}: error: {text}", file=sys.stderr)
    return 2


def add_train_arguments(p) -> None:
    """Every TrainConfig field as a flag (``--set FIELD=JSON`` reaches any field, nested ones merged)."""
    one_line_errors(p)
    count, positive = _at_least(0), _at_least(1)
    p.add_argument("--data", required=True, type=_ingest_output,
                   help="ingest output root (holds manifest.parquet, shards.parquet); local or s3://")
    p.add_argument("--out", required=True, help="output dir for checkpoints, plots, report.md; local or s3://")
    p.add_argument("--model", default="tiny", type=_preset, help="AVFF preset: tiny | laptop | paper (default: %(default)s)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                   help="AVFFConfig override, e.g. --override fusion='\"late\"' --override dropout=0.1")
    p.add_argument("--stages", choices=["both", "pretrain", "classify"], default="both",
                   help="pretrain: self-supervised stage 1 only; classify: stage 2 only (default: %(default)s)")
    p.add_argument("--pretrain-epochs", type=count, default=1, help="stage-1 epochs (default: %(default)s)")
    p.add_argument("--epochs", type=count, default=10, help="stage-2 epochs at most (default: %(default)s)")
    p.add_argument("--batch-size", type=positive, default=8, help="(default: %(default)s)")
    p.add_argument("--lr", type=_at_least(1e-12, float), default=1e-4, help="learning rate (default: %(default)s)")
    p.add_argument("--optimizer", choices=["adamw", "adam", "lion"], default="adamw", help="(default: %(default)s)")
    p.add_argument("--scheduler", choices=["warmup_cosine", "cosine_warm_restarts", "constant"],
                   default="warmup_cosine", help="(default: %(default)s)")  # fmt: skip
    p.add_argument("--warmup", type=count, default=0, help="optimizer steps of linear warmup (default: %(default)s)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="auto: bf16/fp16 on GPU, fp32 on CPU (default: %(default)s)")  # fmt: skip
    p.add_argument("--patience", type=positive, default=3,
                   help="stop after this many epochs without improvement (default: %(default)s)")  # fmt: skip
    p.add_argument("--monitor", default="val_video_log_loss",
                   help="val metric for early stopping, the best checkpoint and the registry gate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--num-workers", type=count, default=2, help="data loader processes per rank (default: %(default)s)")
    p.add_argument("--world-size", type=positive, default=1,
                   help="data-parallel ranks: GPUs of this machine, or CPU processes; --batch-size is per rank "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--ray-address", default=None,
                   help="run the ranks as Ray Train workers on this Ray cluster (auto | host:6379 | local)")
    p.add_argument("--samples-per-epoch", type=positive, default=None, help="default: one pass over train")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--resume-from", default=None, help="a checkpoint dir, pointer .json, or an earlier --out")
    p.add_argument("--pretrained-encoders", default=None, help="encoders.safetensors of a stage-1 run, for stage 2")
    p.add_argument("--experiment", default="avff", help="MLflow experiment (default: %(default)s)")
    p.add_argument("--registered-model", default="avff-dfdc", help="MLflow registered model (default: %(default)s)")
    p.add_argument("--register-if", choices=["beats_prior", "always", "never"], default="beats_prior",
                   help="beats_prior: register only a model whose --monitor beats the prior baseline on val "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--min-improvement", type=_at_least(0.0, float), default=0.0,
                   help="margin by which it must beat the prior (default: %(default)s)")  # fmt: skip
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000")
    g = p.add_argument_group("experiment switches (docs/experiments.md; left out = TrainConfig's default)")
    g.add_argument("--weight-decay", type=float, help="AdamW/Lion weight decay (default 0.05)")
    g.add_argument("--grad-clip", type=float, help="max gradient norm; 0 disables")
    g.add_argument("--cycle-epochs", type=int, help="cosine_warm_restarts: epochs of the first cycle (T_0)")
    g.add_argument("--cycle-mult", type=float, help="cosine_warm_restarts: growth of each next cycle (T_mult)")
    g.add_argument("--fusion", help="avff_concat | avff_sync | attention | late | video_only | audio_only")
    g.add_argument("--dropout", type=float, help="model dropout (default: the preset's)")
    g.add_argument("--video-augment", metavar="PRESET|JSON", help="none | light | strong, or a VideoAugment JSON")
    g.add_argument("--audio-augment", metavar="PRESET|JSON", help="none | sync_safe, or an AudioAugment JSON")
    g.add_argument("--mixup-alpha", type=float, help="Mixup Beta(alpha, alpha) of training batches; 0 off (default 0)")
    g.add_argument("--cutmix-alpha", type=float, help="CutMix Beta(alpha, alpha) of training batches; 0 off (default 0)")
    g.add_argument("--loss", choices=["bce", "focal"], help="stage-2 loss (default bce)")
    g.add_argument("--focal-gamma", type=float, help="focal loss gamma (default 2.0)")
    g.add_argument("--class-weight", choices=["none", "prior"],
                   help="prior: FAKE weight n_real / n_fake of train (default none)")
    g.add_argument("--label-smoothing", type=float, help="in [0, 1) (default 0)")
    g.add_argument("--aux-weight", type=float, help="weight of video-only + audio-only auxiliary BCE terms (default 0)")
    g.add_argument("--contrastive-weight", type=float, help="weight of the stage-2 InfoNCE on REAL clips (default 0)")
    g.add_argument("--curriculum-epochs", type=int, help="self-paced curriculum ramp length; 0 off (default 0)")
    g.add_argument("--curriculum-start", type=float, help="easiest fraction of clips at the first epoch (default 0.5)")
    g.add_argument("--progressive-epochs", type=int, help="progressive down-up resizing ramp length; 0 off (default 0)")
    g.add_argument("--progressive-start", type=float, help="frame scale at the first epoch (default 0.5)")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", dest="set_fields",
                   help="any TrainConfig field, e.g. --set 'mix={\"prob\": 0.5}' (mappings merge)")


_SWITCHES = ("weight_decay", "grad_clip", "cycle_epochs", "cycle_mult", "fusion", "dropout", "loss", "focal_gamma",
             "class_weight", "label_smoothing", "aux_weight", "contrastive_weight", "curriculum_epochs", "curriculum_start",
             "progressive_epochs", "progressive_start")  # fmt: skip


def _parse_overrides(items: list[str], flag: str = "--override") -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} needs KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as fusion=late
    return out


def _preset_or_json(value: str) -> Any:
    return json.loads(value) if value.lstrip().startswith("{") else value


def train_config(args):
    """The TrainConfig the flags describe (validated; unknown --set fields raise)."""
    from flows.train import TrainConfig
    from tasks.evaluate.experiments import deep_merge

    fields: dict[str, Any] = dict(
        data=args.data, checkpoint_dir=args.out, model_config=args.model, overrides=_parse_overrides(args.override),
        stages=args.stages, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, scheduler=args.scheduler, warmup=args.warmup,
        precision=args.precision, patience=args.patience, monitor=args.monitor, seed=args.seed,
        num_workers=args.num_workers, world_size=args.world_size, ray_address=args.ray_address,
        samples_per_epoch=args.samples_per_epoch, device=args.device,
        resume_from=args.resume_from, pretrained_encoders=args.pretrained_encoders, experiment=args.experiment,
        registered_model=args.registered_model, register_if=args.register_if, min_improvement=args.min_improvement,
        tracking_uri=args.tracking_uri,
    )  # fmt: skip
    fields.update({k: getattr(args, k) for k in _SWITCHES if getattr(args, k) is not None})
    for name in ("video_augment", "audio_augment"):
        if getattr(args, name) is not None:
            fields[name] = _preset_or_json(getattr(args, name))
    mix = {k: getattr(args, k) for k in ("mixup_alpha", "cutmix_alpha") if getattr(args, k) is not None}
    if mix:
        fields["mix"] = mix
    fields = deep_merge(fields, _parse_overrides(args.set_fields, "--set"))
    return TrainConfig.model_validate(fields)


def _add_train(sub) -> None:
    add_train_arguments(sub.add_parser(
        "train", help="train AVFF on ingested shards, tracked in MLflow",
        description="Train AVFF on the shards of `avff ingest` (a train-avff flow run), track it in MLflow and "
        "register the model if it beats the prior baseline on val.",
    ))  # fmt: skip


def checked_train_config(args, command: str, *, splits: bool = False):
    """(TrainConfig, 0), or (None, 2) after printing why the flags cannot work (before any run starts)."""
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
        return None, usage_error(command, e)
    return config, 0


def _train(args) -> int:
    config, status = checked_train_config(args, "train", splits=True)
    if config is None:
        return status
    from flows.train import train_avff

    print(json.dumps(train_avff(config), indent=2, default=str))
    return 0


COMMANDS = {"train": (_add_train, _train)}
