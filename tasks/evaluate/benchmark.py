"""The scoring side of the generator's benchmark (bench/results.py): external sets, baselines, probes, summary.

Each seed's external set (faces and voices never seen in training) is preprocessed once
(:func:`external_inputs`) and scored by every trained variant's best and last checkpoints through
``avff predict``'s code path (:func:`score_checkpoints`), beside the hand-made statistics
(:func:`handmade_rows`) and, on a few REAL clips, the shortcut probes (:func:`probe_deltas`).
A score row is ``{video_id, label, manipulation, group, reason, p_fake}`` (``p_fake`` None: not
scored, ``reason`` says why). :func:`summarise` turns the rows of every seed into the cells,
paired comparisons and baselines the benchmark's doc reports.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from storage.checkpoint import WEIGHTS, resolve_checkpoint
from storage.shard_schema import FAKE, REAL
from tasks.evaluate.handmade import STATISTICS
from tasks.evaluate.metrics import seed_mean_auc
from tasks.evaluate.probes import shortcut_probes
from tasks.evaluate.videos import evaluate_videos
from tasks.ingest.preprocess import face_detector
from tasks.ingest.scan import scan_dfdc
from tasks.ingest.splits import identity_groups
from tasks.ingest.video import VideoError
from tasks.serve.predict import decoded_clips, model_inputs, preprocess_for, score_video
from tasks.serve.scorer import load_model

UNI_MODAL = ("video_only", "audio_only")
AV_TYPES = ("lipsync_offset", "audio_swap", "mouth_decorrelated")
LAST_SUBSETS = ("all", "audio-visual fakes")  # where the last checkpoint is scored beside the best
ROW_KEYS = ("video_id", "label", "manipulation", "group", "reason")


def external_inputs(data: Path, pre) -> list[dict]:
    """Every video of ``data`` preprocessed once (shared by all variants): its model inputs and the
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


def score_rows(model_dir: str, inputs: list[dict]) -> list[dict]:
    """P(FAKE) per external video (mean over its clips) for one trained model."""
    scorer = load_model(model_dir, device="cpu")
    rows = []
    for r in inputs:
        x = r["inputs"]  # video and audio only, as the benchmark was measured (no mouth box nor lip shapes)
        p = None if x is None else float(np.mean(scorer.predict_proba(x["video"], x["audio"])))
        rows.append({k: r[k] for k in ROW_KEYS} | {"p_fake": p})
    return rows


def best_checkpoint(run_dir: Path) -> str:
    """The weights of a training run's best checkpoint (``run_dir/checkpoints/best.json``)."""
    return os.path.join(resolve_checkpoint(str(run_dir / "checkpoints" / "best.json")), WEIGHTS)


def score_checkpoints(run_dir: Path, inputs: list[dict]) -> dict[str, list[dict]]:
    """The external rows of a run's best and last checkpoints: {"rows": best, "rows_last": last}."""
    best, last = (resolve_checkpoint(str(run_dir / "checkpoints" / f"{t}.json")) for t in ("best", "last"))
    rows = score_rows(os.path.join(best, WEIGHTS), inputs)
    return {"rows": rows, "rows_last": rows if last == best else score_rows(os.path.join(last, WEIGHTS), inputs)}


def handmade_rows(inputs: list[dict], name: str) -> list[dict]:
    """A hand-made statistic as if it were a variant's P(FAKE) (only its ranking is meaningful: AUC)."""
    return [
        {k: r[k] for k in ROW_KEYS}
        | {
            "p_fake": float(1 / (1 + np.exp(-r["handmade"][name])))
            if np.isfinite(r["handmade"].get(name, np.nan))
            else None
        }
        for r in inputs
    ]  # fmt: skip (a sigmoid keeps the ranking; its log loss means nothing)


def probe_deltas(model_dir: str, data: Path, n: int, work: Path) -> dict[str, list[float]]:
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


def subset(rows: list[dict], types: tuple[str, ...] | None) -> list[dict]:
    """Scored reals plus the scored fakes of ``types`` (None: every fake)."""
    return [r for r in rows if r["p_fake"] is not None and (r["label"] == REAL or types is None
                                                            or r["manipulation"] in types)]  # fmt: skip


def paired_arrays(rows: list[dict], variants: list[str], by_variant: dict[str, list[dict]]) -> tuple:
    """(y, p per variant..., groups) on the videos every variant scored (paired)."""
    scored = set.intersection(*({r["video_id"] for r in by_variant[v] if r["p_fake"] is not None} for v in variants))
    keep = [r for r in rows if r["video_id"] in scored]
    p = {v: {r["video_id"]: r["p_fake"] for r in by_variant[v]} for v in variants}
    y = [int(r["label"] == FAKE) for r in keep]
    return (y, *([p[v][r["video_id"]] for r in keep] for v in variants), [r["group"] for r in keep])


def type_auc(rows: list[dict], kind: str, n_boot: int) -> dict:
    """One seed's AUC of ``kind``'s fakes against all reals, with its group-bootstrap interval."""
    return seed_mean_auc([paired_arrays(subset(rows, (kind,)), ["x"], {"x": rows})], n_resamples=n_boot)


def summarise(per_seed: dict[int, dict], variants: list[str], n_boot: int, uni: set[str] = set(UNI_MODAL),
              stood_in: dict[str, frozenset[str]] | None = None) -> dict:  # fmt: skip
    """Cells (mean AUC and interval per variant and subset, at the best and the last checkpoint), paired
    comparisons, counts and baselines; ``stand_in``: the cells of a variant that trained on a pseudo-fake
    standing in for one of the subset's types (``stood_in``: variant -> those types,
    :func:`tasks.train.benchmark.stood_in`)."""
    first = next(iter(per_seed.values()))
    types = sorted({r["manipulation"] for r in first[variants[0]]["rows"] if r["label"] == FAKE})
    subsets = {"all": None, "audio-visual fakes": AV_TYPES, **{t: (t,) for t in types}}
    cells, cells_last, stand_in = {}, {}, {}
    for name, sel in subsets.items():
        for v in variants:
            for key, out in (("rows", cells), ("rows_last", cells_last)):
                if key == "rows_last" and (name not in LAST_SUBSETS or v in STATISTICS):
                    continue
                runs = [paired_arrays(subset(res[v][key], sel), [v], {v: res[v][key]}) for res in per_seed.values()]
                out[(name, v)] = seed_mean_auc(runs, n_resamples=n_boot)
            stand_in[(name, v)] = bool(set(sel or types) & (stood_in or {}).get(v, frozenset()))
    paired = {}
    learned = [v for v in variants if v not in STATISTICS]
    for a in (v for v in learned if v not in uni):
        for b in (v for v in learned if v in uni):
            for name in ("audio-visual fakes", "all"):
                runs = [paired_arrays(subset(res[a]["rows"], subsets[name]), [a, b],
                                      {a: res[a]["rows"], b: res[b]["rows"]}) for res in per_seed.values()]  # fmt: skip
                paired[(a, b, name)] = seed_mean_auc(runs, n_resamples=n_boot)
    evals = {(s, v): evaluate_videos(res[v]["rows"], prior=res[v]["prior"], n_bootstrap=0)
             for s, res in per_seed.items() for v in variants}  # fmt: skip
    probes = {v: first[v].get("probes") or {} for v in variants}
    return {"seeds": list(per_seed), "types": types, "subsets": list(subsets), "cells": cells, "paired": paired,
            "cells_last": cells_last, "stand_in": stand_in, "stood_in": dict(stood_in or {}), "evals": evals,
            "variants": variants, "probes": probes,
            "val_identities": {s: res[variants[0]].get("val_identities") for s, res in per_seed.items()},
            "n_videos": {s: len(res[variants[0]]["rows"]) for s, res in per_seed.items()},
            "unscored": {v: sum(evals[(s, v)]["unscored"] for s in per_seed) for v in variants}}  # fmt: skip
