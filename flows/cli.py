"""The ``avff`` command: sample, ingest, train, evaluate, predict, stack.

Each subcommand builds the flow's typed config from its flags and calls the flow (so a
CLI run is a Prefect flow run too: against PREFECT_API_URL when set, else a temporary
local server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="DFDC folder -> WebDataset shards + parquet manifests")
    p.add_argument("--data", required=True, help="DFDC root (dfdc_train_part_*/) or one folder with metadata.json")
    p.add_argument("--out", required=True, help="output root, local or s3://")
    p.add_argument("--executor", choices=["ray", "local"], default="ray")
    p.add_argument("--face-size", type=int, default=224)
    p.add_argument("--videos-per-shard", type=int, default=128)
    p.add_argument("--max-clips", type=int, default=3)
    p.add_argument("--no-require-audio", action="store_true", help="keep videos without audio (silent mel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ratios", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--folds", type=int, default=5, help="k of the manifest's grouped k-fold column (cv-avff)")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--identities", default=None, metavar="FILE",
                   help="csv/parquet with columns video, identity: videos of one identity share a split")


def _ingest(args) -> int:
    from flows.ingest import IngestConfig, ingest_dfdc

    cfg = IngestConfig(
        data=args.data,
        out=args.out,
        executor=args.executor,
        face_size=args.face_size,
        videos_per_shard=args.videos_per_shard,
        max_clips=args.max_clips,
        require_audio=not args.no_require_audio,
        seed=args.seed,
        folds=args.folds,
        ratios=tuple(args.ratios),
        num_workers=args.num_workers,
        identities=args.identities,
    )
    result = ingest_dfdc(cfg)
    print(json.dumps(result, indent=2))
    return 0


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a small synthetic DFDC-format dataset (real + labelled fakes)")
    p.add_argument("--out", required=True)
    p.add_argument("--n-real", type=int, default=8)
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)


def _sample(args) -> int:
    from tasks.sample_data import make_dfdc_sample

    path = make_dfdc_sample(
        args.out, n_real=args.n_real, parts=args.parts, duration_s=args.duration, size=(args.size, args.size), seed=args.seed
    )
    print(path)
    return 0


def _add_stack(sub) -> None:
    from deployments.stack import add_arguments

    add_arguments(sub.add_parser("stack", help="start/stop the local Prefect + MLflow (+ Ray) stack"))


def _stack(args) -> int:
    from deployments.stack import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from flows import cli_evaluate, cli_experiments, cli_predict, cli_train

    commands = {
        "ingest": (_add_ingest, _ingest),
        "sample": (_add_sample, _sample),
        "stack": (_add_stack, _stack),
        **cli_train.COMMANDS,
        **cli_predict.COMMANDS,
        **cli_evaluate.COMMANDS,
        **cli_experiments.COMMANDS,
    }
    for add, _ in commands.values():
        add(sub)
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # without PREFECT_API_URL a flow starts a temporary local server; on a busy machine it needs > 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return commands[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
