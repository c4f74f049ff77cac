"""``avff train``: flags -> TrainConfig -> the train-avff flow (picked up by flows.cli).

:func:`add_train_arguments` and :func:`train_config` are shared with ``avff cv`` and
``avff ablate`` (flows/cli_experiments.py), so every training switch is a flag of all three.
Experiment switches default to None here: a flag left out keeps TrainConfig's default.
"""

from __future__ import annotations

import json
from typing import Any


def add_train_arguments(p) -> None:
    """Every TrainConfig field as a flag (``--set FIELD=JSON`` reaches any field, nested ones merged)."""
    p.add_argument("--data", required=True, help="ingest output root (shards.parquet, manifest.parquet)")
    p.add_argument("--out", required=True, help="checkpoint/output dir, local or s3://")
    p.add_argument("--model", default="tiny", help="AVFF preset: tiny | laptop | paper")
    p.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                   help="AVFFConfig override, e.g. --override fusion='\"late\"' --override dropout=0.1")
    p.add_argument("--stages", choices=["both", "pretrain", "classify"], default="both")
    p.add_argument("--pretrain-epochs", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--optimizer", choices=["adamw", "adam", "lion"], default="adamw")
    p.add_argument("--scheduler", choices=["warmup_cosine", "cosine_warm_restarts", "constant"], default="warmup_cosine")
    p.add_argument("--warmup", type=int, default=0, help="optimizer steps of linear warmup")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--monitor", default="val_video_log_loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--samples-per-epoch", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume-from", default=None)
    p.add_argument("--pretrained-encoders", default=None)
    p.add_argument("--experiment", default="avff")
    p.add_argument("--registered-model", default="avff-dfdc")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000")
    g = p.add_argument_group("experiment switches (docs/experiments.md; left out = TrainConfig's default)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--grad-clip", type=float, help="max gradient norm; 0 disables")
    g.add_argument("--cycle-epochs", type=int, help="cosine_warm_restarts: epochs of the first cycle (T_0)")
    g.add_argument("--cycle-mult", type=float, help="cosine_warm_restarts: growth of each next cycle (T_mult)")
    g.add_argument("--fusion", help="avff_concat | avff_sync | attention | late | video_only | audio_only")
    g.add_argument("--dropout", type=float)
    g.add_argument("--video-augment", metavar="PRESET|JSON", help="none | light | strong, or a VideoAugment JSON")
    g.add_argument("--audio-augment", metavar="PRESET|JSON", help="none | sync_safe, or an AudioAugment JSON")
    g.add_argument("--mixup-alpha", type=float)
    g.add_argument("--cutmix-alpha", type=float)
    g.add_argument("--loss", choices=["bce", "focal"])
    g.add_argument("--focal-gamma", type=float)
    g.add_argument("--class-weight", choices=["none", "prior"])
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--aux-weight", type=float)
    g.add_argument("--contrastive-weight", type=float)
    g.add_argument("--curriculum-epochs", type=int)
    g.add_argument("--curriculum-start", type=float)
    g.add_argument("--progressive-epochs", type=int)
    g.add_argument("--progressive-start", type=float)
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
    from tasks.experiments import deep_merge

    fields: dict[str, Any] = dict(
        data=args.data, checkpoint_dir=args.out, model_config=args.model, overrides=_parse_overrides(args.override),
        stages=args.stages, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, scheduler=args.scheduler, warmup=args.warmup,
        precision=args.precision, patience=args.patience, monitor=args.monitor, seed=args.seed,
        num_workers=args.num_workers, samples_per_epoch=args.samples_per_epoch, device=args.device,
        resume_from=args.resume_from, pretrained_encoders=args.pretrained_encoders, experiment=args.experiment,
        registered_model=args.registered_model, tracking_uri=args.tracking_uri,
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
    add_train_arguments(sub.add_parser("train", help="train AVFF on ingested shards, tracked in MLflow"))


def _train(args) -> int:
    from flows.train import train_avff

    print(json.dumps(train_avff(train_config(args)), indent=2, default=str))
    return 0


COMMANDS = {"train": (_add_train, _train)}
