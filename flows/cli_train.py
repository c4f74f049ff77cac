"""``avff train``: flags -> TrainConfig -> the train-avff flow (picked up by flows.cli)."""

from __future__ import annotations

import json


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train AVFF on ingested shards, tracked in MLflow")
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


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--override needs KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as fusion=late
    return out


def _train(args) -> int:
    from flows.train import TrainConfig, train_avff

    config = TrainConfig(
        data=args.data, checkpoint_dir=args.out, model_config=args.model, overrides=_parse_overrides(args.override),
        stages=args.stages, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, scheduler=args.scheduler, warmup=args.warmup,
        precision=args.precision, patience=args.patience, monitor=args.monitor, seed=args.seed,
        num_workers=args.num_workers, samples_per_epoch=args.samples_per_epoch, device=args.device,
        resume_from=args.resume_from, pretrained_encoders=args.pretrained_encoders, experiment=args.experiment,
        registered_model=args.registered_model, tracking_uri=args.tracking_uri,
    )  # fmt: skip
    print(json.dumps(train_avff(config), indent=2, default=str))
    return 0


COMMANDS = {"train": (_add_train, _train)}
