"""Per-manipulation results of the tiny AVFF and its uni-modal ablations on the generator's benchmark.

    python bench/results.py [--seeds 3] [--n-real 32] [--n-val 10] [--epochs 8] [--out /tmp/avff-results]
    python bench/results.py --pretrain-real 100 --w-sync 1 ...   # the command docs/results.md names
    python bench/results.py --seeds 1 --n-real 10 --n-val 2 --n-real-external 2 --duration 3.5 --pretrain-epochs 1 \
        --epochs 1 --probes 1 --out /tmp/avff-smoke --doc /tmp/avff-smoke/results.md   # smoke, a few minutes

Per seed: generates a training set (identity pool ``train``) and a held-out external set (its own
slice of pool ``external``: other faces and voices, never seen in training, stage 1 or another
seed's external set), ingests the training set with at least ``--n-val`` identities in val, trains
the variants of the `tiny` preset (avff_concat = the paper's audio-visual model, video_only,
audio_only, signal-branch ablations, ...), and scores the external set with each variant's best
and last checkpoints through `avff predict`'s code path. With ``--pretrain-real N`` stage 1 runs per
seed on N real-only identities of the ``pretrain`` pool (generated and ingested once), the lip-sync
loss weighted by ``--w-sync``, and every variant trains stage 2 from it.

The doc (``--doc``, default docs/results.md) reports per cell the mean video-level AUC over seeds
with a 95 % interval from a two-level bootstrap (seeds drawn with replacement, then a REAL video and
its fakes resampled together within each drawn seed's external set:
:func:`tasks.evaluate.metrics.seed_mean_auc`), marks (†) the cells of a variant that drew a
pseudo-fake standing in for the row's type (:data:`tasks.train.pseudo_fakes.STAND_INS`), a paired
comparison of each audio-visual variant against each uni-modal one, best against last checkpoint,
the prior baseline from each training split's FAKE fraction, the videos that could not be scored,
and shortcut probes (``--probes N``:
how each model's P(FAKE) moves on N REAL external clips when the audio is shifted, leading silence
is added or cut, or the clip is re-encoded at a lower quality; :mod:`tasks.evaluate.probes`). Everything on CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
from bench.av_signal import signal_table  # noqa: E402
from storage import fs  # noqa: E402
from storage.shard_schema import FAKE, LABELS, REAL  # noqa: E402
from storage.tables import ManifestRow, read_table  # noqa: E402
from storage.checkpoint import WEIGHTS, resolve_checkpoint  # noqa: E402
from tasks.evaluate.videos import evaluate_videos  # noqa: E402
from tasks.ingest.preprocess import face_detector  # noqa: E402
from tasks.ingest.scan import scan_dfdc  # noqa: E402
from tasks.evaluate.metrics import seed_mean_auc  # noqa: E402
from tasks.evaluate.handmade import STATISTICS  # noqa: E402
from tasks.ingest.video import VideoError  # noqa: E402
from tasks.serve.predict import decoded_clips, model_inputs, preprocess_for, score_video  # noqa: E402
from tasks.evaluate.probes import shortcut_probes  # noqa: E402
from tasks.synthetic.dfdc_sample import make_dfdc_sample  # noqa: E402
from tasks.synthetic.faces import pool_sources  # noqa: E402
from tasks.serve.scorer import load_model  # noqa: E402
from tasks.ingest.splits import assign_splits, identity_groups  # noqa: E402
from tasks.tracking.logger import InMemoryLogger  # noqa: E402
from tasks.train.pseudo_fakes import AUDIO_KINDS, STAND_INS, VISUAL_KINDS, kinds_drawn, stand_ins  # noqa: E402
from tasks.train.run import run_training  # noqa: E402
from tasks.train.settings import TrainSettings  # noqa: E402

VARIANTS = ("avff_concat", "video_only", "audio_only")
UNI_MODAL = ("video_only", "audio_only")
AV_TYPES = ("lipsync_offset", "audio_swap", "mouth_decorrelated")
KINDS = {"lipsync_offset": "audio-visual", "audio_swap": "audio-visual", "mouth_decorrelated": "audio-visual",
         "face_blend": "visual", "visual_artifact": "visual", "audio_pitch": "audio"}  # fmt: skip
LAST_SUBSETS = ("all", "audio-visual fakes")  # where the last checkpoint is scored beside the best
TEST_RATIO = 0.1  # the training set's own test split: run_training reports it; the benchmark scores the external sets
SIZE = (160, 160)


def split_ratios(n_real: int, n_val: int) -> tuple[float, float, float]:
    """(train, val, test) ratios that put about ``n_val`` + 1 of ``n_real`` identities in val (the hash
    split is not exact; :func:`_split_seed` then insists on ``n_val``), TEST_RATIO in test, the rest in train."""
    val = (n_val + 1) / n_real
    train = 1.0 - val - TEST_RATIO
    if train < 0.3:
        raise ValueError(f"--n-real {n_real} leaves too few training identities beside {n_val} validation ones: "
                         f"raise --n-real to at least {math.ceil((n_val + 1) / (0.7 - TEST_RATIO))}")  # fmt: skip
    return train, val, TEST_RATIO


def _split_seed(data: Path, ratios: tuple[float, float, float], min_val_groups: int = 1) -> int:
    """The first split seed whose hash split gives every split with a positive ratio a REAL and a
    FAKE video and val at least ``min_val_groups`` identities: on a handful of groups seed 0 can
    leave a split empty (tasks/ingest/splits.py)."""
    entries = scan_dfdc(str(data)).entries
    need = {(s, label) for s, r in zip(("train", "val", "test"), ratios) if r > 0 for label in LABELS}
    for seed in range(100):
        a = assign_splits(entries, ratios, seed=seed)
        val_groups = {x.group for x in a.values() if x.split == "val"}
        if need <= {(a[e.video_id].split, e.label) for e in entries} and len(val_groups) >= min_val_groups:
            return seed
    raise ValueError(f"no split seed below 100 gives every split both labels and val {min_val_groups} identities "
                     f"on {data}: generate more identities")  # fmt: skip


def _ingest(data: Path, out: Path, ratios: tuple[float, float, float], search_seed: bool = True,
            min_val_groups: int = 1) -> None:  # fmt: skip
    from flows.ingest import ingest_dfdc
    from tasks.ingest.settings import IngestSettings

    if not (out / "shards.parquet").exists():
        seed = _split_seed(data, ratios, min_val_groups) if search_seed else 0
        ingest_dfdc(IngestSettings(data=str(data), out=str(out), face_size=64, videos_per_shard=16, executor="local",
                                   ratios=ratios, seed=seed, progress=False))  # fmt: skip


def _val_identities(shards: Path) -> int:
    """Identities (groups) in the ingested val split: what picks the checkpoint, the calibration and the threshold."""
    return len({r.group for r in read_table(fs.IngestLayout(str(shards)).manifest, ManifestRow)
                if r.split == "val" and r.status == "ingested"})  # fmt: skip


def _train_prior(shards: Path) -> float:
    """The video-level FAKE fraction of the ingested training split: the prior baseline's P(FAKE)."""
    rows = [r for r in read_table(fs.IngestLayout(str(shards)).manifest, ManifestRow)
            if r.split == "train" and r.status == "ingested"]  # fmt: skip
    return sum(r.label == FAKE for r in rows) / len(rows)


def _pretrain(args, out: Path, seed: int) -> str:
    """Stage 1 for one seed on ``--pretrain-real`` identities of the pretrain pool -> encoders.safetensors."""
    encoders = out / f"seed{seed}" / "pretrain" / "encoders.safetensors"
    if not encoders.exists():
        data = make_dfdc_sample(out / "pretrain_data", n_real=args.pretrain_real, parts=2, duration_s=args.duration,
                                size=SIZE, seed=args.seed, manipulations=(), pool="pretrain")  # fmt: skip
        _ingest(data, out / "pretrain_shards", ratios=(1.0, 0.0, 0.0), search_seed=False)  # reals only, all train
        settings = TrainSettings(data=str(out / "pretrain_shards"), output_dir=str(encoders.parent), stages="pretrain",
                                 pretrain_epochs=args.pretrain_epochs, batch_size=8, lr=1e-3, device="cpu",
                                 seed=seed, num_workers=0, overrides={"w_sync": args.w_sync} if args.w_sync else {})  # fmt: skip
        run_training(settings, log=InMemoryLogger())
    return str(encoders)


def _external_inputs(data: Path, pre) -> list[dict]:
    """Every external video preprocessed once (shared by all variants): its model inputs and the
    hand-made statistics of its clips, or the reason it cannot be scored."""
    entries = scan_dfdc(str(data)).entries
    groups = identity_groups(entries).groups
    out = []
    with face_detector(pre) as det:
        for e in entries:
            row = {"video_id": e.video_id, "label": e.label, "manipulation": e.manipulation,
                   "group": groups[e.video_id], "reason": None, "inputs": None, "handmade": {}}  # fmt: skip
            try:
                clips, _ = decoded_clips(str(data / e.rel_path), pre, det)
            except VideoError as err:
                row["reason"] = err.reason
            else:
                row["inputs"] = model_inputs(clips)
                row["handmade"] = {n: float(np.nanmean([fn(c) for c in clips])) for n, fn in STATISTICS.items()}
            out.append(row)
    return out


def _score(model_dir: str, inputs: list[dict]) -> list[dict]:
    """P(FAKE) per external video (mean over its clips) for one trained variant."""
    scorer = load_model(model_dir, device="cpu")
    rows = []
    for r in inputs:
        x = r["inputs"]  # video and audio only, as this table was measured (no mouth box nor lip shapes)
        p = None if x is None else float(np.mean(scorer.predict_proba(x["video"], x["audio"])))
        rows.append({k: r[k] for k in ("video_id", "label", "manipulation", "group", "reason")} | {"p_fake": p})
    return rows


def _handmade_rows(inputs: list[dict], name: str) -> list[dict]:
    """A hand-made statistic as if it were a variant's P(FAKE) (only its ranking is meaningful: AUC)."""
    return [
        {k: r[k] for k in ("video_id", "label", "manipulation", "group", "reason")}
        | {
            "p_fake": float(1 / (1 + np.exp(-r["handmade"][name])))
            if np.isfinite(r["handmade"].get(name, np.nan))
            else None
        }
        for r in inputs
    ]  # fmt: skip (a sigmoid keeps the ranking; its log loss means nothing)


def _probe(model_dir: str, data: Path, n: int, work: Path) -> dict[str, list[float]]:
    """Shortcut probes (tasks/evaluate/probes.py) on the first ``n`` REAL videos of ``data``: probe -> deltas of P(FAKE)."""
    scorer = load_model(model_dir, device="cpu")
    pre = preprocess_for(scorer)
    reals = sorted(e.rel_path for e in scan_dfdc(str(data)).entries if e.label == REAL)[:n]
    deltas: dict[str, list[float]] = {}
    with face_detector(pre) as det:
        for rel in reals:
            for r in shortcut_probes(data / rel, lambda path: score_video(path, scorer, pre, det).p_fake, work):
                if r.probe != "control":  # an edit the model cannot score (e.g. too short) stays n/a
                    deltas.setdefault(r.probe, []).extend([] if r.delta is None else [r.delta])
    return deltas


def _overrides(pairs: list[str]) -> dict:
    """["lr=1e-3", "class_weight=\"prior\""] -> {"lr": 0.001, "class_weight": "prior"} (bare words are strings)."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def variant_fields(args, name: str) -> dict:
    """A variant's TrainSettings fields: its fusion head (its name, unless --variant-set gives "fusion")
    and its --variant-set overrides; a model "overrides" mapping merges with --set's."""
    own, common = _own_fields(args, name), _overrides(args.set)
    merged = {**common.get("overrides", {}), **own.get("overrides", {})}
    return {"fusion": name, **common, **own, **({"overrides": merged} if merged else {})}


def _own_fields(args, name: str) -> dict:
    """What --variant-set gives one variant, on top of --set."""
    return json.loads(dict(pair.split("=", 1) for pair in args.variant_set).get(name, "{}"))


def fusion_of(args, name: str) -> str:
    return variant_fields(args, name)["fusion"]


def drawn_kinds(args, name: str, held_out: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The pseudo-fake kinds variant ``name`` draws in training (with ``held_out`` types' stand-ins off) and
    can see: a uni-modal head cannot learn from a kind that alters only the other modality (to it, label noise)."""
    settings = TrainSettings(data=".", output_dir=".", **variant_fields(args, name))
    blind = {"video_only": AUDIO_KINDS, "audio_only": VISUAL_KINDS}.get(settings.fusion or "", ())
    return tuple(k for k in kinds_drawn(settings.pseudo_fakes, (*settings.exclude_manipulations, *held_out))
                 if k not in blind)  # fmt: skip


def stand_in_on(drawn: tuple[str, ...], types: tuple[str, ...]) -> bool:
    """Whether a variant drawing pseudo-fake kinds ``drawn`` trained on a stand-in of any of ``types``:
    its AUC on them may move only because that stand-in was on."""
    return bool(set(drawn) & stand_ins(types))


def external_slice(args, seed: int) -> tuple[int, int]:
    """The slice of the external pool seed ``seed`` draws its faces from: one per seed, shared by none."""
    return seed - args.seed, args.seeds


def _score_checkpoints(run_dir: Path, inputs: list[dict]) -> dict[str, list[dict]]:
    """The external rows of a run's best and last checkpoints: {"rows": best, "rows_last": last}."""
    best, last = (resolve_checkpoint(str(run_dir / "checkpoints" / f"{t}.json")) for t in ("best", "last"))
    rows = _score(os.path.join(best, WEIGHTS), inputs)
    return {"rows": rows, "rows_last": rows if last == best else _score(os.path.join(last, WEIGHTS), inputs)}


def run_seed(args, out: Path, seed: int) -> dict[str, dict]:
    """Train (unless --score-only) and score every variant for one seed:
    {variant: {rows, rows_last, prior, best_epoch, probes, val_identities}}."""
    root = out / f"seed{seed}"
    train_data = make_dfdc_sample(root / "train_data", n_real=args.n_real, parts=2, duration_s=args.duration, size=SIZE,
                                  seed=seed)  # fmt: skip
    external = make_dfdc_sample(root / "external", n_real=args.n_real_external, parts=0, duration_s=args.duration,
                                size=SIZE, seed=seed + 1000, pool="external",
                                pool_slice=external_slice(args, seed))  # fmt: skip
    _ingest(train_data, root / "shards", split_ratios(args.n_real, args.n_val), min_val_groups=args.n_val)
    n_val = _val_identities(root / "shards")
    shared = {}
    if args.pretrain_real and not args.score_only:
        shared = {"stages": "classify", "pretrained_encoders": _pretrain(args, out, seed)}
    if args.extra_real and not args.score_only:
        shared["extra_train_data"] = [str(out / "pretrain_shards")]
    prior = _train_prior(root / "shards")
    results, inputs = {}, None
    for variant in args.variants:
        fields = {"pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "batch_size": 8, "lr": 3e-4,
                  "patience": 4, "device": "cpu", "seed": seed, "report_bootstrap": 20, "num_workers": 0, **shared,
                  **variant_fields(args, variant)}  # fmt: skip
        settings = TrainSettings(data=str(root / "shards"), output_dir=str(root / variant), **fields)
        done = (root / variant / "scores.json").exists()  # trained and scored by an earlier, stopped run: resume
        best_epoch = None if args.score_only or done else run_training(settings, log=InMemoryLogger()).best_epoch
        ckpt = resolve_checkpoint(str(root / variant / "checkpoints" / "best.json"))
        if inputs is None:  # every variant of the tiny preset reads the same clips
            inputs = _external_inputs(external, preprocess_for(load_model(os.path.join(ckpt, WEIGHTS), device="cpu")))
        scored = _score_checkpoints(root / variant, inputs)
        rows = scored["rows"]
        probes = _probe(os.path.join(ckpt, WEIGHTS), external, args.probes, root / variant / "probes") \
            if args.probes and seed == args.seed else {}  # fmt: skip
        (root / variant / "scores.json").write_text(json.dumps({**scored, "prior": prior, "probes": probes}, indent=1))
        results[variant] = {**scored, "prior": prior, "best_epoch": best_epoch, "probes": probes,
                            "val_identities": n_val}  # fmt: skip
        overall = evaluate_videos(rows, prior=prior, n_bootstrap=0)["overall"]
        print(f"seed {seed} {variant}: external AUC {overall['auc']:.3f} (best epoch {best_epoch})", flush=True)
    for name in STATISTICS:  # the hand-made baselines, scored on the same external videos
        rows = _handmade_rows(inputs, name)
        results[name] = {"rows": rows, "rows_last": rows, "prior": prior, "best_epoch": None, "probes": {}}
    if args.holdout and seed == args.seed:  # the main variant again, each type (its val videos, its stand-in) held out
        main = args.variants[0]
        for kind in KINDS:
            name = f"{main}-without-{kind}"
            fields = {"pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "batch_size": 8, "lr": 3e-4,
                      "patience": 4, "device": "cpu", "seed": seed, "report_bootstrap": 20, "num_workers": 0, **shared,
                      **variant_fields(args, main), "exclude_manipulations": [kind]}  # fmt: skip
            if not args.score_only:
                run_training(TrainSettings(data=str(root / "shards"), output_dir=str(root / name), **fields),
                             log=InMemoryLogger())  # fmt: skip
            results[name] = {**_score_checkpoints(root / name, inputs), "prior": prior, "best_epoch": None,
                             "probes": {}, "held_out": kind}  # fmt: skip
            print(f"seed {seed} {name}: external AUC on {kind} "
                  f"{evaluate_videos(results[name]['rows'], prior=prior, n_bootstrap=0)['by_type'][kind]['auc']:.3f}",
                  flush=True)  # fmt: skip
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seeds", type=int, default=3, help="training seeds seed, seed+1, ... (each its own data and runs)"
    )
    ap.add_argument("--n-real", type=int, default=32, help="identities of each seed's training set (train, val, test)")
    ap.add_argument(
        "--n-val",
        type=int,
        default=10,
        help="at least this many of them validate (pick the checkpoint, the calibration, the threshold)",
    )
    ap.add_argument(
        "--n-real-external",
        type=int,
        default=16,
        help="identities of each seed's external set, from that seed's own slice of the external pool",
    )
    ap.add_argument("--duration", type=float, default=7.0, help="seconds per generated video (>= 3.5: one 3.2 s clip)")
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pretrain-real",
        type=int,
        default=0,
        help="N > 0: stage 1 per seed on N real-only identities, then every variant classifies from it",
    )
    ap.add_argument("--w-sync", type=float, default=0.0, help="stage-1 lip-sync loss weight (with --pretrain-real)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a TrainSettings field for every variant, e.g. --set lr=1e-3",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        help="variants to train: a fusion head's name, or any name given a --variant-set (default: all three)",
    )
    ap.add_argument(
        "--variant-set",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='TrainSettings fields of one variant, e.g. avff_plain=\'{"fusion": "avff_concat", '
        '"overrides": {"sync_branch": false}}\' ("overrides" merges with --set\'s)',
    )
    ap.add_argument(
        "--holdout",
        action="store_true",
        help="first seed only: retrain the first variant once per manipulation type with that type's fakes "
        "kept out of training (exclude_manipulations), and report each on the type it never saw",
    )
    ap.add_argument(
        "--extra-real",
        action="store_true",
        help="with --pretrain-real: stage 2 also reads the pretrain pool's REAL clips (extra_train_data)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="group-bootstrap resamples per interval")
    ap.add_argument(
        "--probes",
        type=int,
        default=3,
        help="shortcut probes on this many REAL external videos of the first seed (0: none)",
    )
    ap.add_argument(
        "--score-only",
        action="store_true",
        help="no training: score the variants' existing best checkpoints under --out and rewrite the doc",
    )
    ap.add_argument(
        "--only-seed",
        type=int,
        default=None,
        help="train and score this one of the seeds and stop (no doc): run seeds as parallel processes "
        "into one --out, then once more with --score-only to write the doc",
    )
    ap.add_argument("--out", default="/tmp/avff-results")
    ap.add_argument("--doc", default=str(Path(__file__).resolve().parents[1] / "docs" / "results.md"))
    args = ap.parse_args()
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    try:
        split_ratios(args.n_real, args.n_val)
    except ValueError as err:
        ap.error(str(err))
    room = min(sum(map(len, pool_sources("external", (i, args.seeds)))) for i in range(args.seeds))
    if args.n_real_external > room:
        ap.error(f"--n-real-external {args.n_real_external}: each of {args.seeds} seeds' slices of the external pool "
                 f"holds {room} faces; ask for fewer (or fewer seeds) so no face repeats")  # fmt: skip
    torch.set_num_threads(1)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    out = Path(args.out)
    t0 = time.time()
    seeds = list(range(args.seed, args.seed + args.seeds))
    if args.only_seed is not None:
        if args.only_seed not in seeds:
            ap.error(f"--only-seed {args.only_seed} is not one of the seeds {seeds}")
        run_seed(args, out, args.only_seed)
        (out / f"seed{args.only_seed}" / "run_seconds.txt").write_text(f"{time.time() - t0:.0f}\n")
        return
    per_seed = {s: run_seed(args, out, s) for s in seeds}
    timing = out / "run_seconds.txt"  # wall time of the training run, kept for --score-only rewrites
    if not args.score_only:
        timing.write_text(f"{time.time() - t0:.0f}\n")
    elif not timing.exists() and all((out / f"seed{s}" / "run_seconds.txt").exists() for s in seeds):
        parts = [float((out / f"seed{s}" / "run_seconds.txt").read_text()) for s in seeds]  # --only-seed runs
        timing.write_text(f"{max(parts):.0f}\n")
    uni = {v for v in args.variants if fusion_of(args, v) in UNI_MODAL}
    if args.variants:
        drawn = {v: drawn_kinds(args, v) for v in args.variants}
        summary = summarise(per_seed, [*args.variants, *STATISTICS], args.bootstrap, uni, drawn)
        write_doc(Path(args.doc), summary, args, float(timing.read_text()) if timing.exists() else None,
                  per_seed[seeds[0]])  # fmt: skip


# --------------------------------------------------------------------------- statistics


def _subset(rows: list[dict], types: tuple[str, ...] | None) -> list[dict]:
    """Scored reals plus the scored fakes of ``types`` (None: every fake)."""
    return [r for r in rows if r["p_fake"] is not None and (r["label"] == REAL or types is None
                                                            or r["manipulation"] in types)]  # fmt: skip


def _arrays(rows: list[dict], variants: list[str], by_variant: dict[str, list[dict]]) -> tuple:
    """(y, p per variant..., groups) on the videos every variant scored (paired)."""
    scored = set.intersection(*({r["video_id"] for r in by_variant[v] if r["p_fake"] is not None} for v in variants))
    keep = [r for r in rows if r["video_id"] in scored]
    p = {v: {r["video_id"]: r["p_fake"] for r in by_variant[v]} for v in variants}
    y = [int(r["label"] == FAKE) for r in keep]
    return (y, *([p[v][r["video_id"]] for r in keep] for v in variants), [r["group"] for r in keep])


def summarise(per_seed: dict[int, dict], variants: list[str], n_boot: int, uni: set[str] = set(UNI_MODAL),
              drawn: dict[str, tuple[str, ...]] | None = None) -> dict:  # fmt: skip
    """Cells (mean AUC and interval per variant and subset, at the best and the last checkpoint), paired
    comparisons, counts and baselines; ``stand_in``: the cells of a variant that drew (``drawn``: variant ->
    pseudo-fake kinds) a stand-in of the subset's types."""
    first = next(iter(per_seed.values()))
    types = sorted({r["manipulation"] for r in first[variants[0]]["rows"] if r["label"] == FAKE})
    subsets = {"all": None, "audio-visual fakes": AV_TYPES, **{t: (t,) for t in types}}
    cells, cells_last, stand_in = {}, {}, {}
    for name, sel in subsets.items():
        for v in variants:
            for key, out in (("rows", cells), ("rows_last", cells_last)):
                if key == "rows_last" and (name not in LAST_SUBSETS or v in STATISTICS):
                    continue
                runs = [_arrays(_subset(res[v][key], sel), [v], {v: res[v][key]}) for res in per_seed.values()]
                out[(name, v)] = seed_mean_auc(runs, n_resamples=n_boot)
            stand_in[(name, v)] = stand_in_on((drawn or {}).get(v, ()), tuple(sel or types))
    paired = {}
    learned = [v for v in variants if v not in STATISTICS]
    for a in (v for v in learned if v not in uni):
        for b in (v for v in learned if v in uni):
            for name in ("audio-visual fakes", "all"):
                runs = [_arrays(_subset(res[a]["rows"], subsets[name]), [a, b], {a: res[a]["rows"], b: res[b]["rows"]})
                        for res in per_seed.values()]  # fmt: skip
                paired[(a, b, name)] = seed_mean_auc(runs, n_resamples=n_boot)
    evals = {(s, v): evaluate_videos(res[v]["rows"], prior=res[v]["prior"], n_bootstrap=0)
             for s, res in per_seed.items() for v in variants}  # fmt: skip
    probes = {v: first[v].get("probes") or {} for v in variants}
    return {"seeds": list(per_seed), "types": types, "subsets": list(subsets), "cells": cells, "paired": paired,
            "cells_last": cells_last, "stand_in": stand_in, "drawn": dict(drawn or {}), "evals": evals,
            "variants": variants, "probes": probes,
            "val_identities": {s: res[variants[0]].get("val_identities") for s, res in per_seed.items()},
            "n_videos": {s: len(res[variants[0]]["rows"]) for s, res in per_seed.items()},
            "unscored": {v: sum(evals[(s, v)]["unscored"] for s in per_seed) for v in variants}}  # fmt: skip


# --------------------------------------------------------------------------- the doc


def _command_line() -> str:
    """This run's arguments, less --doc/--out (they say where, not what)."""
    argv, keep = sys.argv[1:], []
    while argv:
        arg = argv.pop(0)
        if arg == "--score-only":
            continue
        if arg in ("--doc", "--out"):
            argv = argv[1:]
        elif not arg.startswith(("--doc=", "--out=")):
            keep.append(arg)
    return shlex.join(keep)


def _ci(c: dict) -> str:
    fmt = lambda x: "n/a" if x is None or math.isnan(x) else f"{x:.2f}"  # noqa: E731
    return f"{fmt(c['mean'])} [{fmt(c['lo'])}, {fmt(c['hi'])}]"


def _mean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


STAND_IN_MARK = "†"
STAND_IN_NOTE = (
    f"{STAND_IN_MARK}: the variant drew a pseudo-fake that stands in for this type in training "
    "(`tasks/train/pseudo_fakes.py` STAND_INS: "
    + "; ".join(f"{t} ← {', '.join(k)}" for t, k in STAND_INS.items())
    + "), so the number may move only because of that stand-in: it is not a type the model never saw."
)


def _cell(summary: dict, name: str, v: str) -> str:
    """A cell's mean [interval], marked when the variant drew a stand-in of the row's types."""
    return _ci(summary["cells"][(name, v)]) + (f" {STAND_IN_MARK}" if summary["stand_in"].get((name, v)) else "")


def _table(summary: dict) -> list[str]:
    variants = summary["variants"]
    lines = ["| videos | kind | " + " | ".join(variants) + " |", "|---|---|" + "---:|" * len(variants)]
    for name in summary["subsets"]:
        label = f"**{name}**" if name in ("all", "audio-visual fakes") else name
        kind = KINDS.get(name, "")
        lines.append(f"| {label} | {kind} | " + " | ".join(_cell(summary, name, v) for v in variants) + " |")
    evals, seeds = summary["evals"], summary["seeds"]
    lines.append("| log loss, all (mean over seeds) | | " + " | ".join(
        "—" if v in STATISTICS else f"{_mean([evals[(s, v)]['overall']['log_loss'] for s in seeds]):.2f}"
        for v in variants) + " |")  # fmt: skip
    return lines


# issue 22's targets (video AUC on the external sets, mean over seeds); "today" is docs/results.md before it
PAPER = "avff_nosignals"  # the paper's model: encoders, A2V/V2A and the head, no signal branch
LIPSYNC_TYPES = ("lipsync_offset", "audio_swap", "mouth_decorrelated")


def _goal_rows(summary: dict, main: str) -> list[tuple[str, str, str, float, str | None]]:
    """(row label, today, goal text, goal value, variant) per target: the paper's model on each lip-sync type,
    the main variant on each against the hand-made lip-sync statistic, its visual types and all videos."""
    cells, rows = summary["cells"], []
    paper = PAPER if (("all", PAPER) in cells) else None
    for t in LIPSYNC_TYPES:
        rows.append((f"the paper's model (`{PAPER}`): {t}", "0.49–0.52", "≥ 0.90", 0.90, paper))
    for t in LIPSYNC_TYPES:
        stat = cells.get((t, "lip_sync"), {}).get("mean", 0.98)
        rows.append((f"`{main}`: {t}", "0.85", f"≥ the hand-made statistic ({stat:.2f})", stat, main))
    sharp = cells.get(("visual_artifact", "sharpness"), {}).get("mean", 0.88)
    rows.append((f"`{main}`: visual_artifact", "0.58", f"≥ the hand-made sharpness ({sharp:.2f})", sharp, main))
    rows.append((f"`{main}`: face_blend", "0.49", "≥ 0.75", 0.75, main))
    rows.append((f"`{main}`: all", "0.69", "≥ 0.90", 0.90, main))
    return rows


def _targets(summary: dict, main: str) -> list[str]:
    """Issue 22's targets table: each goal against its variant's mean AUC, and the main variant's all-video
    log loss against the prior's (it must be lower by at least 0.05)."""
    seeds, evals, cells = summary["seeds"], summary["evals"], summary["cells"]
    lines = [
        "Met: the mean over seeds reaches the goal at the two decimals shown. "
        "A cell marked † may owe its number to a pseudo-fake stand-in of its type (above).",
        "",
        "| videos | today | goal | now | met |",
        "|---|---:|---|---:|---|",
    ]
    for label, today, goal_text, goal, v in _goal_rows(summary, main):
        name = label.rsplit(": ", 1)[1]
        c = cells.get((name, v)) if v else None
        if c is None:
            lines.append(f"| {label} | {today} | {goal_text} | not run | no |")
            continue
        met = round(c["mean"], 2) >= round(goal, 2)  # at the two decimals the table shows
        lines.append(f"| {label} | {today} | {goal_text} | {_cell(summary, name, v)} | {'yes' if met else 'no'} |")
    ll = _mean([evals[(s, main)]["overall"]["log_loss"] for s in seeds])
    prior = _mean([evals[(s, main)]["overall"]["prior_log_loss"] for s in seeds])
    lines.append(f"| `{main}`: log loss, all | 0.42 (prior 0.41) | ≤ the prior's − 0.05 ({prior - 0.05:.2f}) | "
                 f"{ll:.2f} | {'yes' if ll <= prior - 0.05 else 'no'} |")  # fmt: skip
    lines.append(
        "| the paper's model: stage-1 sync margin | not measured | > 0, interval excluding 0 | "
        "see docs/learning.md | — |"
    )
    return lines


def _last_table(summary: dict) -> list[str]:
    """Each learned variant at its best checkpoint (picked on val) and at its last one."""
    learned = [v for v in summary["variants"] if v not in STATISTICS]
    val = ", ".join(str(n) for n in summary["val_identities"].values())
    lines = ["", "## Best or last checkpoint", "",
             f"The best checkpoint is the one the monitor picks on the training set's val split ({val} identities "
             "per seed); the last is where training stopped. When the two agree within their intervals, picking "
             "on val chose nothing that a fixed schedule would not have.", "",
             "| variant | " + " | ".join(f"{n}, best | {n}, last" for n in LAST_SUBSETS) + " |",
             "|---|" + "---:|---:|" * len(LAST_SUBSETS)]  # fmt: skip
    for v in learned:
        lines.append(f"| {v} | " + " | ".join(f"{_ci(summary['cells'][(n, v)])} | {_ci(summary['cells_last'][(n, v)])}"
                                            for n in LAST_SUBSETS) + " |")  # fmt: skip
    return lines


def _verdicts(summary: dict) -> list[str]:
    if not summary["paired"]:
        return ["Not measured in this run: `--variants` holds no uni-modal variant (`video_only`, `audio_only`)."]
    lines = []
    for (a, b, name), c in summary["paired"].items():
        beats = c["lo"] > 0
        word = "beats" if beats else ("is beaten by" if c["hi"] < 0 else "does not separate from")
        lines.append(
            f"- **{a} vs {b}**, {name}: AUC difference {_ci(c)} (one-sided bootstrap p = {c['p_le_0']:.3f}): "
            f"{a} {word} {b}{' beyond noise' if beats or c['hi'] < 0 else ' (the interval holds 0)'}."
        )
    return lines


def _probe_table(summary: dict) -> list[str]:
    """Mean change of P(FAKE) per probe and variant, on REAL external clips of the first seed."""
    probes, variants = summary["probes"], [v for v in summary["variants"] if v not in STATISTICS]
    names = list(dict.fromkeys(n for v in variants for n in probes[v]))
    if not names:
        return []
    n = max(len(d) for v in variants for d in probes[v].values())
    cell = lambda d: f"{sum(d) / len(d):+.3f}" if d else "n/a"  # noqa: E731
    return [
        "",
        "## Shortcut probes (`tasks/evaluate/probes.py`)",
        "",
        f"Mean change of P(FAKE) on {n} REAL external clip(s) of seed {summary['seeds'][0]}, against the same clip "
        "re-encoded unchanged. A model that reads lip sync should rise when the audio is shifted; one that moves "
        "when leading silence is added or cut, or at another encoder quality, keys on an artefact.",
        "",
        "| probe | " + " | ".join(variants) + " |",
        "|---|" + "---:|" * len(variants),
        *(f"| {name} | " + " | ".join(cell(probes[v].get(name, [])) for v in variants) + " |" for name in names),
    ]


def _holdout_table(first: dict, main: str, n_boot: int, drawn: tuple[str, ...] = ()) -> list[str]:
    """Each manipulation type's AUC when the main variant trained on it and when it never saw it (first seed);
    ``drawn``: the pseudo-fake kinds the main variant draws (its stand-ins mark the "trained on it" cells)."""
    held = {res["held_out"]: res for res in first.values() if res.get("held_out")}
    if not held:
        return []
    lines = ["", "## Unseen manipulation types", "",
             f"`{main}` retrained on the first seed's data once per type with that type held out "
             "(`exclude_manipulations`): its fakes in neither training nor validation (so they pick no checkpoint, "
             "calibration or threshold) and its pseudo-fake stand-ins not drawn; the other pseudo-fakes stay on where "
             "the variant uses them. Then scored on that type's external fakes against all external reals. One seed: "
             f"the interval is the group bootstrap of that seed. {STAND_IN_MARK} as above.", "",
             "| type | kind | trained on it | never saw it |", "|---|---|---:|---:|"]  # fmt: skip
    for kind, res in held.items():
        seen = seed_mean_auc([_arrays(_subset(first[main]["rows"], (kind,)), [main], {main: first[main]["rows"]})],
                             n_resamples=n_boot)  # fmt: skip
        unseen = seed_mean_auc([_arrays(_subset(res["rows"], (kind,)), ["x"], {"x": res["rows"]})], n_resamples=n_boot)
        mark = f" {STAND_IN_MARK}" if stand_in_on(drawn, (kind,)) else ""
        lines.append(f"| {kind} | {KINDS[kind]} | {_ci(seen)}{mark} | {_ci(unseen)} |")
    return lines


REAL_FOOTAGE = "<!-- real footage: bench/real.py --doc -->"  # bench/real.py owns the doc from here on


def _kept_tail(path: Path) -> str:
    """What another benchmark wrote into ``path`` (from its marker to the end), kept across a rewrite."""
    text = path.read_text() if path.exists() else ""
    return "\n" + text[text.index(REAL_FOOTAGE) :] if REAL_FOOTAGE in text else ""


def write_doc(path: Path, summary: dict, args, seconds: float | None, per_seed_first: dict) -> None:
    seeds, evals, variants = summary["seeds"], summary["evals"], summary["variants"]
    prior_ll = _mean([evals[(s, variants[0])]["overall"]["prior_log_loss"] for s in seeds])
    priors = [evals[(s, variants[0])]["prior"] for s in seeds]
    unscored = ", ".join(f"{v} {n}" for v, n in summary["unscored"].items())
    lines = [
        "# Results on the generator's benchmark (tiny preset, CPU)",
        "",
        f"Reproduce: `python bench/results.py {_command_line()}` "
        f"({f'{seconds / 60:.0f} min' if seconds else 'time not recorded'} on {os.cpu_count()} CPU cores, "
        f"{platform.processor() or platform.machine()}, from an empty `--out`; a rerun skips the sample, "
        "ingest and stage-1 steps whose outputs exist).",
        "",
        (
            f"Stage 1 per seed on {args.pretrain_real} real-only identities of the generator's `pretrain` pool, "
            f"{args.pretrain_epochs} epochs, lip-sync loss weight w_sync={args.w_sync:g}; then each variant trains "
            "stage 2 only, from those encoders. "
            if args.pretrain_real
            else ""
        )
        + f"Seeds {seeds}: each seed generates its own training set of {args.n_real} identities of the `train` pool × "
        f"(1 real + 6 fakes), {args.duration:g} s at 160², ingested at 64² with a grouped split whose val holds "
        f"{', '.join(str(n) for n in summary['val_identities'].values())} identities (at least {args.n_val}: they "
        "pick the checkpoint, the calibration and the threshold), and its own external set of "
        f"{args.n_real_external} identities from its own slice of the `external` pool (faces and voices never seen "
        "in training, in stage 1 or in another seed's external set). Video level, on the external sets.",
        "",
        "Each cell: **mean AUC over the seeds [95 % interval]**; the interval is a two-level bootstrap "
        f"({args.bootstrap} resamples: the seeds drawn with replacement, then within each drawn seed's external set "
        "a REAL and its fakes resampled together, and the drawn seeds' AUCs averaged), so it carries both what "
        "training a seed gave and which identities were tested. Per type: that type's fakes against all real "
        f"videos. {STAND_IN_NOTE} The prior "
        f"baseline (constant P(FAKE) = the training split's video-level FAKE fraction, {', '.join(f'{p:.2f}' for p in priors)}) "
        f"has AUC 0.50 and log loss {prior_ll:.2f} (mean over seeds). Videos that could not be scored, "
        f"over {sum(summary['n_videos'].values())} external videos: {unscored}.",
        "",
        "## Targets (issue 22)",
        "",
        f"The main variant is `{summary['variants'][0]}` (the first of `--variants`). Variants (TrainSettings "
        "fields beyond the shared ones; `overrides` are model config fields, avff_model/config.py):",
        "",
        *(
            f"- `{v}`: `{json.dumps({'fusion': fusion_of(args, v), **_own_fields(args, v)})}`"
            for v in summary["variants"]
            if v not in STATISTICS
        ),
        "",
        *_targets(summary, summary["variants"][0]),
        "",
        "## Every variant, per manipulation type",
        "",
        f"The last {len(STATISTICS)} columns are the hand-made statistics of `tasks/evaluate/handmade.py` "
        "(no learning) on the same external videos.",
        "",
        *_table(summary),
        *(
            [
                "",
                f"**Too few groups for these intervals**: {args.n_real_external} external identities per seed; a "
                "group bootstrap needs a few dozen groups to be trusted (a smoke run, not a result).",
            ]
            if args.n_real_external < 10
            else []
        ),
        "",
        "## Does audio-visual beat uni-modal beyond noise?",
        "",
        "Paired comparison on the same external videos (mean over seeds of AUC(audio-visual) − AUC(uni-modal), "
        "95 % two-level bootstrap interval): a variant beats another beyond noise when the interval excludes 0.",
        "",
        *_verdicts(summary),
        *_last_table(summary),
        *_probe_table(summary),
        *_holdout_table(per_seed_first, summary["variants"][0], args.bootstrap, summary["drawn"].get(variants[0], ())),
    ]
    lines += _appendix(args, out_root=str(Path(args.out) / f"seed{seeds[0]}"))
    path.write_text("\n".join(lines) + "\n" + _kept_tail(path))
    print(f"wrote {path}")


def _appendix(args, out_root: str) -> list[str]:
    return ["", "## Is the signal there? (`bench/av_signal.py`)", "",
            f"Hand-made statistics (`tasks/evaluate/handmade.py`) on the training shards of seed {args.seed}, no "
            "learning: per clip, `lip_sync` = minus the correlation of the mouth region's darkness with the loudness "
            "of the mel frames at each frame's time, and `sharpness` = minus the Laplacian variance of the face "
            "centre (higher = more FAKE-like for both).", "",
            *signal_table(out_root), "",
            "Where this separates REAL from a fake type and the models above do not, the signal survived "
            "ingest and the models failed to learn it: the limit is learning (data, model size, steps), "
            "not the benchmark or the pipeline.", "",
            "## Reading the numbers", "",
            "- **Held out means held out**: training, stage-1 and external sets draw faces from disjoint photo pools "
            "(and synthetic morphs of a pool's own photos) and voices from pool-keyed random streams, and each seed's "
            "external set from its own slice of the external pool (`pool_slice`; `tasks/synthetic/faces.py`, tested "
            "in `tests/tasks/synthetic/test_dfdc_sample.py`). A held-out type (`--holdout`) leaves training, "
            "validation and the pseudo-fakes (its stand-ins), tested in `tests/tasks/train/test_run.py`.",
            "- **Calibration:** each model's P(FAKE) is Platt-scaled on its own val split (`calibrate`, on by "
            "default): slope and intercept move no ranking (AUC), and the intercept takes up the base rate, so log "
            "loss sits near the val prior's for a model that learned nothing and below it only for one that did.",
            "- **Where the targets stand and what would reach them:** docs/model.md (extension 12) has the measured "
            "curve of the lip-sync branch against REAL data and steps, and the reasons the visual and pitch types "
            "stay near chance.",
            "- **Small data:** these are small models on small synthetic data: the numbers say which signals each "
            "variant picked up, not how AVFF does on DFDC."]  # fmt: skip


if __name__ == "__main__":
    main()
