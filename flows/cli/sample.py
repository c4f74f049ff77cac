"""``avff sample --out DIR``: a small synthetic DFDC-format dataset (real videos and labelled fakes); no flow run."""

from __future__ import annotations

import sys


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a small synthetic DFDC-format dataset (real + labelled fakes)")
    p.add_argument("--out", required=True, help="folder to write (dfdc_train_part_*/ with metadata.json)")
    p.add_argument(
        "--n-real", type=int, default=8, help="real videos per part; each gets its fakes (default: %(default)s)"
    )
    p.add_argument(
        "--parts", type=int, default=1, help="dfdc_train_part_* folders; 0: one flat folder (default: %(default)s)"
    )
    p.add_argument("--duration", type=float, default=4.0, help="seconds per video (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--pool",
        choices=["train", "pretrain", "external"],
        default="train",
        help="identity pool: sets of different pools share no face or voice (default: %(default)s)",
    )
    p.add_argument(
        "--with-refusals",
        action="store_true",
        help="also list a video that is not there and add a file with no metadata entry, so ingest "
        "shows its refusals (the demo's sample)",
    )


def _sample(args) -> int:
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    path = make_dfdc_sample(
        args.out,
        n_real=args.n_real,
        parts=args.parts,
        duration_s=args.duration,
        size=(args.size, args.size),
        seed=args.seed,
        pool=args.pool,
    )
    if args.with_refusals:
        from tasks.synthetic.dfdc_sample import add_refusals

        refused = add_refusals(path)
        print(f"listed but missing: {refused['missing']}; no metadata entry: {refused['unlisted']}", file=sys.stderr)
    print(path)
    return 0


COMMANDS = {"sample": (_add_sample, _sample)}
