"""Per-manipulation results of the tiny AVFF and its uni-modal ablations on the generator's benchmark.

    python bench/results.py [--n-real 16] [--epochs 8] [--out /tmp/avff-results]
    python bench/results.py --pretrain-real 300 --w-sync 1 ...   # the command docs/results.md names

Generates a training set and a held-out external set (another seed: other identities and
voices), ingests the training set, trains three variants of the `tiny` preset that differ
only in the fusion head (avff_concat = the paper's audio-visual model, video_only,
audio_only), scores the external set with each through `avff predict`'s code path, and
writes docs/results.md: video-level AUC and log loss per manipulation type, beside the
prior baseline. With ``--pretrain-real N`` stage 1 runs once on N real-only identities (the
lip-sync loss weighted by ``--w-sync``) and every variant trains stage 2 from it. Everything on
CPU; 2-30 minutes on 2 cores depending on the sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from av_signal import signal_table
from tasks.checkpoint import WEIGHTS, resolve_checkpoint
from tasks.evaluate import evaluate_videos
from tasks.faces import FaceDetector
from tasks.metadata import scan_dfdc
from tasks.predict import preprocess_for, score_video
from tasks.serving import load_model
from tasks.tracking import InMemoryLogger
from tasks.training import TrainSettings, run_training

VARIANTS = ("avff_concat", "video_only", "audio_only")
UNI_MODAL = ("video_only", "audio_only")
AV_TYPES = ("lipsync_offset", "audio_swap", "mouth_decorrelated")


def _ingest(data: Path, out: Path, ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> None:
    from flows.ingest import IngestConfig, ingest_dfdc

    if not (out / "shards.parquet").exists():
        ingest_dfdc(IngestConfig(data=str(data), out=str(out), face_size=64, videos_per_shard=16, executor="local",
                                 ratios=ratios, progress=False))  # fmt: skip


def _pretrain(args, out: Path) -> str:
    """Stage 1 once, on ``--pretrain-real`` real-only identities (another seed): -> encoders.safetensors."""
    from tasks.sample_data import make_dfdc_sample

    encoders = out / "pretrain" / "encoders.safetensors"
    if not encoders.exists():
        data = make_dfdc_sample(out / "pretrain_data", n_real=args.pretrain_real, parts=2, duration_s=7.0,
                                size=(160, 160), seed=args.seed + 7, manipulations=())  # fmt: skip
        _ingest(data, out / "pretrain_shards", ratios=(1.0, 0.0, 0.0))
        settings = TrainSettings(data=str(out / "pretrain_shards"), output_dir=str(out / "pretrain"), stages="pretrain",
                                 pretrain_epochs=args.pretrain_epochs, batch_size=8, lr=1e-3, device="cpu",
                                 seed=args.seed, overrides={"w_sync": args.w_sync} if args.w_sync else {})  # fmt: skip
        run_training(settings, log=InMemoryLogger())
    return str(encoders)


def _score(model_dir: str, data: Path) -> list[dict]:
    scorer = load_model(model_dir, device="cpu")
    pre = preprocess_for(scorer)
    rows = []
    with FaceDetector() as det:
        for e in scan_dfdc(str(data)).entries:
            s = score_video(str(data / e.rel_path), scorer, pre, det)
            rows.append({"video_id": e.video_id, "label": e.label, "manipulation": e.manipulation, "p_fake": s.p_fake})
    return rows


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-real", type=int, default=16)
    ap.add_argument("--n-real-external", type=int, default=8)
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-real", type=int, default=0,
                    help="N > 0: stage 1 once on N real-only identities, then every variant classifies from it")
    ap.add_argument("--w-sync", type=float, default=0.0, help="stage-1 lip-sync loss weight (with --pretrain-real)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="override a TrainSettings field for every variant, e.g. --set lr=1e-3")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="fusion heads to train (default: all three)")
    ap.add_argument("--score-only", action="store_true",
                    help="no training: score the variants' existing best checkpoints under --out and rewrite the doc")
    ap.add_argument("--out", default="/tmp/avff-results")
    ap.add_argument("--doc", default=str(Path(__file__).resolve().parents[1] / "docs" / "results.md"))
    args = ap.parse_args()
    from tasks.sample_data import make_dfdc_sample

    torch.set_num_threads(1)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    out = Path(args.out)
    t0 = time.time()
    train_data = make_dfdc_sample(out / "train_data", n_real=args.n_real, parts=2, duration_s=7.0, size=(160, 160), seed=args.seed)
    external = make_dfdc_sample(out / "external", n_real=args.n_real_external, parts=0, duration_s=7.0, size=(160, 160),
                                seed=args.seed + 1000)  # fmt: skip
    _ingest(train_data, out / "shards")
    shared = {}
    if args.pretrain_real and not args.score_only:
        shared = {"stages": "classify", "pretrained_encoders": _pretrain(args, out)}
    results = {}
    for variant in args.variants:
        fields = {"pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "batch_size": 8, "lr": 3e-4,
                  "patience": 4, "device": "cpu", "seed": args.seed, "report_bootstrap": 20, **shared,
                  **_overrides(args.set)}  # fmt: skip
        settings = TrainSettings(data=str(out / "shards"), output_dir=str(out / variant), fusion=variant, **fields)
        best_epoch = "?" if args.score_only else run_training(settings, log=InMemoryLogger()).best_epoch
        ckpt = resolve_checkpoint(str(out / variant / "checkpoints" / "best.json"))
        rows = _score(os.path.join(ckpt, WEIGHTS), external)
        results[variant] = evaluate_videos(rows, prior=None)
        by_type = " ".join(f"{t}={g['auc']:.2f}" for t, g in results[variant]["by_type"].items())
        print(f"{variant}: external AUC {results[variant]['overall']['auc']:.3f} (best epoch {best_epoch}) {by_type}")
    timing = out / "run_seconds.txt"  # wall time of the training run, kept for --score-only rewrites
    if not args.score_only:
        timing.write_text(f"{time.time() - t0:.0f}\n")
    if set(UNI_MODAL) < set(results):  # the uni-modal baselines and at least one audio-visual variant
        write_doc(Path(args.doc), results, args, float(timing.read_text()) if timing.exists() else None)


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


def write_doc(path: Path, results: dict, args, seconds: float | None) -> None:
    def cell(g: dict) -> str:
        return f"{g['auc']:.2f} / {g['log_loss']:.2f}"

    variants = list(results)  # in the order they ran
    types = list(next(iter(results.values()))["by_type"])
    first = next(iter(results.values()))
    lines = [
        "# Results on the generator's benchmark (tiny preset, CPU)",
        "",
        f"Reproduce: `python bench/results.py {_command_line()}` "
        f"({f'{seconds / 60:.0f} min' if seconds else 'time not recorded'} on {os.cpu_count()} CPU cores, "
        f"{platform.processor() or platform.machine()}, from an empty `--out`; a rerun skips the sample, "
        "ingest and stage-1 steps whose outputs exist).",
        "",
        (f"Stage 1 (once, shared by every variant): {args.pretrain_real} real-only identities of another seed, "
         f"{args.pretrain_epochs} epochs, lip-sync loss weight w_sync={args.w_sync:g}; then each variant trains "
         "stage 2 only, from those encoders. " if args.pretrain_real else "") +
        f"Training: {args.n_real} real identities × (1 real + 6 fakes), 7 s at 160², ingested at 64² (2 clips per video), "
        f"70/15/15 grouped train/val/test split. Evaluation: a held-out generated set of {args.n_real_external} other identities "
        "(another seed), video level. Each cell: **AUC / log loss**; per type, that type's fakes against all real videos. "
        f"The prior baseline (constant P(FAKE) = the set's fake fraction) has AUC 0.50 and log loss "
        f"{first['overall']['prior_log_loss']:.2f} overall.",
        "",
        "| manipulation | kind | " + " | ".join(variants) + " |",
        "|---|---|" + "---:|" * len(variants),
        "| **all** | | " + " | ".join(cell(results[v]["overall"]) for v in variants) + " |",
    ]
    kinds = {"lipsync_offset": "audio-visual", "audio_swap": "audio-visual", "mouth_decorrelated": "audio-visual",
             "face_blend": "visual", "visual_artifact": "visual", "audio_pitch": "audio"}  # fmt: skip
    for t in types:
        lines.append(f"| {t} | {kinds.get(t, '?')} | " + " | ".join(cell(results[v]["by_type"][t]) for v in variants) + " |")
    lines += ["", "## What the table shows", ""]
    for t in types:
        aucs = {v: results[v]["by_type"][t]["auc"] for v in variants}
        best = max(aucs, key=aucs.get)
        weak = [v for v, a in aucs.items() if a < 0.6]
        lines.append(f"- **{t}**: best {best} (AUC {aucs[best]:.2f})" + (f"; near chance: {', '.join(weak)}" if weak else "") + ".")
    av = {v: sum(results[v]["by_type"][t]["auc"] for t in AV_TYPES) / len(AV_TYPES) for v in variants}
    uni = max(av[v] for v in UNI_MODAL)
    full = max((v for v in variants if v not in UNI_MODAL), key=av.get)
    if av[full] < 0.6 or av[full] - uni < 0.05:
        verdict = (f"{full}, the best audio-visual variant, does not clearly beat the uni-modal ones (near chance or "
                   "within 0.05 AUC, which is noise at this size): this run does NOT show the audio-visual advantage")
    else:
        verdict = f"{full}, the best audio-visual variant, beats the best uni-modal one by {av[full] - uni:.2f} AUC"
    lines += ["", f"On the audio-visual manipulations (mean AUC over {', '.join(AV_TYPES)}): "
              + ", ".join(f"{v} {av[v]:.2f}" for v in variants) + f". {verdict}. These are small models on "
              "small synthetic data: the numbers say which signals each variant picked up, not how AVFF does on DFDC."]
    lines += ["", "## Is the signal there? (`bench/av_signal.py`)", "",
              "A hand-made lip-sync score on the same training shards, no learning: per clip, the correlation "
              "of the mouth region's darkness with the loudness of the mel frames at each frame's time.", "",
              *signal_table(args.out), "",
              "Where this separates REAL from a fake type and the models above do not, the signal survived "
              "ingest and the models failed to learn it: the limit is learning (data, model size, steps), "
              "not the benchmark or the pipeline.", "",
              "## What it takes, and what did not work", "",
              "- **Stage 1 on many identities.** With `--pretrain-real N`, stage 1 runs once on N real-only "
              "identities of another seed, with the lip-sync loss weighted by `--w-sync` (docs/model.md, deviation "
              "10), and every variant, the uni-modal ones included, trains stage 2 from those same encoders: the "
              "variants differ only in what their head reads.",
              "- **`avff_sync` adds the lip-sync scores to the head**; `avff_concat` (the paper's head, token "
              "pairs of own and cross-modal features) reads the same sync-pretrained encoders and learns the "
              "comparison itself. Compare the two columns to see whether the explicit scores help at this size.",
              "- **Calibration:** the variants train with class weights from the prior (balanced loss), which "
              "shifts probabilities towards 0.5, so their log loss can sit above the prior baseline's while AUC "
              "(ranking) improves. Calibrate on val (temperature scaling) before reading probabilities.",
              "- **Without `--pretrain-real`** (stage 1 on the training split's REAL clips only) no variant "
              "generalised to unseen identities. Measured on 2026-11-26: external AUC 0.39-0.53 with 12 or 40 "
              "identities, longer schedules, class weights from the prior, and the lip-sync loss, which memorised "
              "28 identities (training loss ~0, in-sync margin ~0 on held-out clips).",
              "- **Noise:** per type, each cell is REAL videos against as many fakes of one type, with "
              f"{args.n_real_external} of each. A difference of ±0.1 is within noise. Read the pattern across the "
              "three audio-visual types, not single cells.",
              "- **Next:** more identities, and the `laptop` preset on a GPU."]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
