"""Real footage: train the project's model on real talking faces, score fakes of people it never saw.

    python bench/real.py --out DIR [--data ../shared/data/realav] [--doc docs/results.md]
    python bench/real.py --out DIR --clips-per-person 1 --steps 4 --max-clips 1   # smallest sizes (the test's)
    python bench/real.py --out DIR --compare-modes      # also the hand-made statistic in 3 clip samplings
    python bench/real.py --out DIR --select             # choose the model by grouped CV on train+val people

Every number the project had came from its own generator. This takes the real talking-face footage
(``../shared/data/realav``: DFDC-format folders, ``provenance.json``), deduplicates it by sha256 and
splits its PEOPLE into train / val / test (a person = the repository folder a clip came from, the
closest to an identity the footage names: provenance.json names no one) with the ingest's own
grouped split (:func:`tasks.ingest.splits.assign_splits`, the folder as identity), so that the
ingest's splits are exactly these. From each REAL clip it makes, with the same video packets (copied,
never re-encoded) and the sound re-encoded the same way (AAC 16 kHz mono):

- ``control``: the clip's own sound (REAL);
- ``shift``: the sound moved 0.4-1 s later or earlier (FAKE: lip sync off);
- ``swap``: another person's speech of the same split (FAKE: voice and words do not fit);

and, for test people only (a type never trained on; the ``face_resample`` pseudo-fake is its nearest
stand-in), the first ``ARTEFACT_S`` seconds re-encoded (H.264) twice: ``reencode`` (REAL) and
``artefact`` (FAKE: the lower half of the detected face pixelated), so that the codec is no cue.
The shared generated fakes (realav's FAKE files: SadTalker, Wav2Lip, ...) join their folder's person.

Then: ingest (``flows.ingest.ingest_dfdc``, local executor) -> ``run_training`` (stage 2 only, the
model --select chose, ``CHOSEN``, unless --fusion / --overrides say otherwise; pseudo-fakes on REAL
clips) with val people picking the checkpoint and calibration -> the best checkpoint at ``DIR/model``
(``avff predict --model DIR/model`` loads it) -> every test-people file scored through ``avff predict``'s
code path, beside the hand-made lip-sync statistic (``tasks/evaluate/handmade.py``) on the same clips
and the prior (a constant: AUC 0.5).
AUC of ``control`` against each fake type, with a 95 % bootstrap interval over source clips (a clip
and its fakes resampled together). Written to ``--out``: ``data/footage/`` (the made files and
their metadata.json), ``shards/``, ``model/``, ``scores.csv``, ``summary.json``, and with ``--doc``
the "Real footage" section of that markdown file (between its markers; the rest is kept).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
from storage.checkpoint import resolve_checkpoint  # noqa: E402
from storage.decision import read_decision  # noqa: E402
from storage.shard_schema import FAKE, REAL  # noqa: E402
from tasks.evaluate.handmade import STATISTICS  # noqa: E402
from tasks.evaluate.metrics import auc_or_nan, bootstrap_auc_ci  # noqa: E402
from tasks.ingest.audio import decode_audio  # noqa: E402
from tasks.ingest.preprocess import PreprocessConfig, face_detector  # noqa: E402
from tasks.ingest.scan import VideoEntry, scan_dfdc  # noqa: E402
from tasks.ingest.splits import assign_splits  # noqa: E402
from tasks.ingest.video import VideoError, probe  # noqa: E402
from tasks.media.video_writer import write_video  # noqa: E402
from tasks.serve.predict import decoded_clips, model_inputs  # noqa: E402

RATE = 16000  # the sound of every made file, mono AAC
SHIFT_S = (0.4, 1.0)
ARTEFACT_S = 10.0  # seconds re-encoded for reencode / artefact (the default clips read 9.6 s)
RATIOS = (0.6, 0.15, 0.25)  # people: train, val, test
FAKE_KINDS = ("shift", "swap", "artefact", "generated")
# the models ``--select`` compares by grouped cross-validation on the train and val people (select_model)
_PEAK_ONLY = {"sync_pixels": False, "sync_lip_lags": False, "texture_branch": False}
CANDIDATES = {
    "default: ViT + every branch": {"fusion": "avff_agree", "overrides": {}},
    "ViT + sync peak": {"fusion": "avff_agree", "overrides": _PEAK_ONLY},
    "sync peak alone": {"fusion": "signals_only", "overrides": _PEAK_ONLY},
    "sync peak + texture": {"fusion": "signals_only", "overrides": {"sync_pixels": False, "sync_lip_lags": False}},
}
CHOSEN = "sync peak alone"  # what --select chose by grouped CV on the train and val people: the default model
SELECT_KINDS = ("shift", "swap", "generated")  # the fake kinds every train and val person can have
BEGIN, END = "<!-- real footage: bench/real.py --doc -->", "<!-- end of real footage -->"


@dataclass(frozen=True)
class RealClip:
    path: str
    person: str  # the repository folder: one person or a few, never one person across two folders by design
    video_id: str


@dataclass(frozen=True)
class Made:
    path: str
    kind: str  # control | shift | swap | reencode | artefact | generated
    person: str
    source: str  # the REAL clip it was made from (generated: its own name)
    detail: str  # the shift in seconds, or the swapped-in clip


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _distinct(data: str, label: str) -> list[RealClip]:
    """The files of ``label`` in every part, once each by content (sha256), as (path, person = folder, id)."""
    seen: set[str] = set()
    out = []
    for e in scan_dfdc(data).entries:
        if e.label != label:
            continue
        path = os.path.join(data, e.rel_path)
        digest = _digest(path)
        if digest not in seen:
            seen.add(digest)
            out.append(RealClip(path, e.part, e.video_id))
    return out


def real_clips(data: str) -> list[RealClip]:
    """The REAL clips of every part, once each by content (sha256), those with sound only."""
    out = []
    for c in _distinct(data, REAL):
        try:
            if probe(c.path).has_audio:
                out.append(c)
        except VideoError:
            continue
    return out


def generated_fakes(data: str) -> list[RealClip]:
    """realav's own FAKE files (generator outputs), once each by content."""
    return _distinct(data, FAKE)


def person_splits(people: list[str], seed: int, ratios: tuple[float, float, float] = RATIOS) -> dict[str, str]:
    """person -> train | val | test, as the ingest's grouped split assigns them with ``identities``
    mapping every video to its person (same keys ``identity:<person>``, same ratios and seed)."""
    entries = [VideoEntry(p, p, p, REAL, None, 0) for p in people]
    return {p: a.split for p, a in assign_splits(entries, ratios, seed=seed, identities={p: p for p in people}).items()}


def split_seed(seconds: dict[str, float], people: list[str], ratios: tuple[float, float, float] = RATIOS,
               tries: int = 200) -> int:  # fmt: skip
    """The split seed whose person split shares the usable REAL seconds (``seconds``: person -> seconds of
    its clips long enough for a clip) nearest ``ratios``: a hash split of 15 people of very unequal footage
    can leave val without a usable clip (seed 0 gives val only GRID's 3.0 s clips, all under 3.2 s)."""
    total = sum(seconds.values()) or 1.0

    def distance(seed: int) -> float:
        split = person_splits(people, seed, ratios)
        share = {s: sum(v for p, v in seconds.items() if split[p] == s) / total for s in ("train", "val", "test")}
        return sum(abs(share[s] - r / sum(ratios)) for s, r in zip(("train", "val", "test"), ratios))

    return min(range(tries), key=distance)


def write_with_sound(src: str, dst: str, wave: np.ndarray) -> None:
    """dst = src's video packets, copied, with ``wave`` (n,) float32 at RATE as its only sound (AAC)."""
    with av.open(src) as inp, av.open(dst, "w") as out:
        v_in = inp.streams.video[0]
        v_out = out.add_stream_from_template(v_in)
        a_out = out.add_stream("aac", rate=RATE, layout="mono")
        for packet in inp.demux(v_in):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = v_out
            out.mux(packet)
        _mux_sound(out, a_out, wave)


def _mux_sound(out, a_out, wave: np.ndarray) -> None:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(wave[None, :], np.float32), format="flt", layout="mono"
    )  # (1, n)
    frame.sample_rate, frame.pts = RATE, 0
    out.mux(a_out.encode(frame))
    out.mux(a_out.encode())


def pixelate(rgb: np.ndarray, box: np.ndarray, block: int = 8) -> np.ndarray:
    """rgb (H, W, 3) with the lower half of face ``box`` [x0, y0, x1, y1] pixelated in ``block`` px squares."""
    h, w = rgb.shape[:2]
    x0, x1 = int(max(0, box[0])), int(min(w, box[2]))
    y0, y1 = int(max(0, (box[1] + box[3]) / 2)), int(min(h, box[3]))
    out = rgb.copy()
    if x1 - x0 < block or y1 - y0 < block:
        return out
    region = out[y0:y1, x0:x1]  # (h', w', 3)
    small = region[::block, ::block]  # (h'/b, w'/b, 3)
    out[y0:y1, x0:x1] = np.repeat(np.repeat(small, block, 0), block, 1)[: y1 - y0, : x1 - x0]
    return out


def write_reencoded(
    src: str, dst: str, wave: np.ndarray, detector, artefact: bool, seconds: float = ARTEFACT_S
) -> None:
    """dst = the first ``seconds`` of src re-encoded (H.264, CRF 20) with ``wave`` as its sound; with ``artefact``
    the lower half of the face (detected every 5th frame, the last box kept) pixelated in every frame."""
    with av.open(src) as inp:
        v_in = inp.streams.video[0]
        h, w = v_in.codec_context.height // 2 * 2, v_in.codec_context.width // 2 * 2  # yuv420p: even
        frames = _first_seconds(inp.decode(v_in), seconds, (h, w), detector if artefact else None)
        write_video(dst, frames, v_in.average_rate or 25, wave[: int(seconds * RATE)], RATE, crf=20, preset="veryfast",
                    threads=None, audio_bitrate=None, aac_coder=None)  # fmt: skip


def _first_seconds(decoded, seconds: float, hw: tuple[int, int], detector=None):
    """The (H, W, 3) RGB frames of the first ``seconds``, cropped to ``hw``; with a ``detector`` the lower
    half of the face (detected every 5th frame, the last box kept) pixelated."""
    box = None
    for i, frame in enumerate(decoded):
        if frame.time is not None and frame.time >= seconds:
            return
        rgb = frame.to_ndarray(format="rgb24")[: hw[0], : hw[1]]  # (H, W, 3)
        if detector is not None:
            if i % 5 == 0:
                found = detector.detect(rgb)
                box = max(found, key=lambda d: d[1])[0] if found else box
            rgb = pixelate(rgb, box) if box is not None else rgb
        yield np.ascontiguousarray(rgb)


def _sound(path: str) -> np.ndarray:
    """(n,) float32 at RATE, sample 0 at the video's t=0 (as ingest aligns it)."""
    return decode_audio(path, RATE, max_seconds=120.0, start_time=probe(path).start_time)


def _fit(wave: np.ndarray, n: int) -> np.ndarray:
    """wave repeated or cut to n samples."""
    return np.resize(wave, n) if wave.size else np.zeros(n, np.float32)


def shifted(wave: np.ndarray, shift_s: float) -> np.ndarray:
    """wave moved ``shift_s`` seconds later (> 0, silence first) or earlier (< 0, silence last), same length."""
    k = min(int(round(abs(shift_s) * RATE)), wave.size)
    pad = np.zeros(k, np.float32)
    return np.concatenate([pad, wave])[: wave.size] if shift_s > 0 else np.concatenate([wave[k:], pad])


def make_fakes(clips: list[RealClip], out: Path, seed: int, artefact_detector=None) -> list[Made]:
    """control, shift and swap of each clip (swap partners from ``clips``: pass one split's), in ``out``;
    with ``artefact_detector`` also reencode and artefact."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: list[Made] = []
    sounds = {c.path: _sound(c.path) for c in clips}
    for c in clips:
        wave = sounds[c.path]
        shift = float(rng.uniform(*SHIFT_S)) * (1 if rng.random() < 0.5 else -1)
        others = [o for o in clips if o.person != c.person] or [o for o in clips if o is not c] or [c]
        other = others[int(rng.integers(len(others)))]
        stem = f"{c.person}__{c.video_id}"
        for kind, w, detail in (("control", wave, ""), ("shift", shifted(wave, shift), f"{shift:+.2f}s"),
                                ("swap", _fit(sounds[other.path], wave.size), other.video_id)):  # fmt: skip
            dst = out / f"{stem}__{kind}.mkv"
            write_with_sound(c.path, str(dst), w)
            made.append(Made(str(dst), kind, c.person, stem, detail))
        if artefact_detector is not None:
            for kind in ("reencode", "artefact"):
                dst = out / f"{stem}__{kind}.mkv"
                try:
                    write_reencoded(c.path, str(dst), wave, artefact_detector, artefact=kind == "artefact")
                except (av.FFmpegError, ValueError) as e:  # an odd stream the encoder refuses: say which, go on
                    print(f"{c.path}: not re-encoded for {kind} ({e})", flush=True)
                    dst.unlink(missing_ok=True)
                    continue
                made.append(Made(str(dst), kind, c.person, stem, ""))
    return made


def write_metadata(made: list[Made], out: Path) -> None:
    """out/metadata.json (DFDC format, ``manipulation`` = the kind) and out/identities.csv (video -> person)."""
    controls = {m.source: Path(m.path).name for m in made if m.kind == "control"}
    meta = {Path(m.path).name: {"label": REAL if m.kind in ("control", "reencode") else FAKE,
                                "original": None if m.kind in ("control", "reencode") else controls.get(m.source),
                                "manipulation": None if m.kind in ("control", "reencode") else m.kind}
            for m in made}  # fmt: skip
    (out / "metadata.json").write_text(json.dumps(meta, indent=1))
    with open(out / "identities.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "identity"])
        w.writerows((Path(m.path).name, m.person) for m in made)


def build_footage(data: str, out: Path, seed: int, clips_per_person: int | None,
                  min_seconds: float) -> tuple[list[Made], dict[str, str], int]:  # fmt: skip
    """The made files of every person and the generated fakes, in ``out`` -> (made, person -> split, split seed);
    ``seed`` draws the shifts and swap partners. A rerun reads them back from ``out/made.json``.
    ``min_seconds``: the shortest clip the ingest keeps (weighs the split; shorter clips are still made)."""
    done = out / "made.json"
    if done.exists():
        saved = json.loads(done.read_text())
        return [Made(**m) for m in saved["made"]], saved["splits"], saved["split_seed"]
    clips, generated = real_clips(data), generated_fakes(data)
    duration = {c.path: probe(c.path).duration for c in clips}
    if clips_per_person:  # the longest clips of each person: a short one may be refused
        by: dict[str, list[RealClip]] = {}
        for c in sorted(clips, key=lambda c: -duration[c.path]):
            by.setdefault(c.person, []).append(c)
        clips = [c for cs in by.values() for c in cs[:clips_per_person]]
        generated = [g for g in generated if g.person in by][: len(by)]
    people = sorted({c.person for c in clips + generated})
    usable = {
        p: sum(duration[c.path] for c in clips if c.person == p and duration[c.path] >= min_seconds) for p in people
    }
    by_seed = split_seed(usable, people)
    splits = person_splits(people, by_seed)
    made: list[Made] = []
    with face_detector(PreprocessConfig()) as det:
        for i, split in enumerate(("train", "val", "test")):
            part = [c for c in clips if splits[c.person] == split]
            made += make_fakes(part, out, seed + i, det if split == "test" else None)
    for g in generated:  # copied beside the made files (the data root is one folder); never into the repository
        dst = out / f"{g.person}__{g.video_id}__generated{Path(g.path).suffix}"
        shutil.copyfile(g.path, dst)
        made.append(Made(str(dst), "generated", g.person, f"{g.person}__{g.video_id}", ""))
    write_metadata(made, out)
    done.write_text(json.dumps({"made": [asdict(m) for m in made], "splits": splits, "split_seed": by_seed}, indent=1))
    return made, splits, by_seed


# ---------------------------------------------------------------- ingest and training


def ingest(footage: Path, shards: Path, seed: int, max_clips: int, clip_mode: str, face_size: int, crop: str) -> dict:
    from flows.ingest import ingest_dfdc
    from tasks.ingest.settings import IngestSettings

    return ingest_dfdc(IngestSettings(data=str(footage), out=str(shards), identities=str(footage / "identities.csv"),
                                      ratios=RATIOS, seed=seed, videos_per_shard=32, executor="local",
                                      preprocess={"face_size": face_size, "max_clips": max_clips, "clip_mode": clip_mode,
                                                  "crop": crop, "lip_track": crop == "landmarks"},
                                      progress=False))  # fmt: skip


def check_splits(shards: Path, made: list[Made], splits: dict[str, str]) -> dict[str, dict[str, int]]:
    """Raise unless every ingested video sits in its person's split; -> split -> {videos, people}."""
    from storage import fs
    from storage.tables import ManifestRow, read_table
    from tasks.ingest.splits import video_id_of

    person = {video_id_of(Path(m.path).name): m.person for m in made}
    rows = [r for r in read_table(fs.IngestLayout(str(shards)).manifest, ManifestRow) if r.status == "ingested"]
    wrong = [(r.video_id, r.split) for r in rows if r.split != splits[person[r.video_id]]]
    if wrong:
        raise RuntimeError(f"ingest split {len(wrong)} videos away from their person's split, e.g. {wrong[:3]}")
    return {s: {"videos": sum(r.split == s for r in rows), "people": len({p for p, x in splits.items() if x == s})}
            for s in ("train", "val", "test")}  # fmt: skip


def train(shards: Path, model_dir: Path, args, fold: int | None = None) -> dict:
    """run_training, stage 2 only, of ``args.fusion`` / ``args.overrides`` on the ingested train people; val
    people pick the checkpoint. ``fold``: grouped CV instead (train and val people pooled, that manifest fold
    validates, test people never read)."""
    from tasks.tracking.logger import InMemoryLogger
    from tasks.train.run import run_training
    from tasks.train.settings import PseudoFakeAugment, TrainSettings

    kinds = ("audio_shift", "audio_swap", "mouth_shuffle", "face_resample")
    settings = TrainSettings(data=str(shards), output_dir=str(model_dir), stages="classify", fusion=args.fusion,
                             overrides=json.loads(args.overrides), epochs=args.epochs, samples_per_epoch=args.steps * args.batch // args.epochs or 1,
                             batch_size=args.batch, lr=1e-3, encoder_lr_scale=1.0, warmup=min(50, args.steps // 5),
                             monitor="val_video_auc", patience=args.epochs, device="cpu", num_workers=0,
                             seed=args.seed, report_bootstrap=50, register_if="never", log_checkpoints=False, fold=fold,
                             pseudo_fakes=PseudoFakeAugment(p=args.pseudo_fakes, kinds=kinds) if args.pseudo_fakes
                             else PseudoFakeAugment())  # fmt: skip
    if args.readout is not None:
        settings = settings.replace(readout=args.readout)
    run_training(settings, log=InMemoryLogger())
    return training_record(model_dir, args.steps)


def select_model(shards: Path, out: Path, args, candidates: dict[str, dict], made: list[Made],
                 splits: dict[str, str]) -> dict:  # fmt: skip
    """Grouped cross-validation of each candidate (name -> {"fusion", "overrides"}) on the train and val
    people only (``splits``: person -> split; the test people are never read). Per fold of people: train on
    the other folds' people as :func:`train` does, then score the held-out people's made files with the
    LAST checkpoint (a fixed schedule: nothing is chosen on the held-out people). The out-of-fold scores
    of all folds pooled give each candidate an AUC per fake type (:func:`auc_table`); the chosen one has the
    best mean over SELECT_KINDS, so a model that catches one kind of fake only is not preferred. A fold
    already trained is read back. -> {"folds", "val_auc": name -> each fold's last val video AUC,
    "auc": name -> kind -> cell, "mean": name -> mean over SELECT_KINDS, "chosen"}."""
    from storage.checkpoint import resolve_checkpoint
    from tasks.ingest.splits import video_id_of

    fold_of = manifest_folds(shards)
    held_out = [m for m in made if splits[m.person] != "test" and video_id_of(Path(m.path).name) in fold_of]
    folds = sorted({fold_of[video_id_of(Path(m.path).name)] for m in held_out})  # the train and val people's
    val_auc: dict[str, list] = {}
    last: dict[str, dict[int, str]] = {}
    for name, cand in candidates.items():
        run = argparse.Namespace(**{**vars(args), "fusion": cand["fusion"], "overrides": json.dumps(cand["overrides"])})
        val_auc[name], last[name] = [], {}
        for k in folds:
            model_dir = out / "select" / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") / f"fold-{k}"
            done = model_dir / "checkpoints" / "last.json"
            record = training_record(model_dir, args.steps) if done.exists() else train(shards, model_dir, run, fold=k)
            val_auc[name].append(record["history"][-1].get("val_video_auc"))
            last[name][k] = resolve_checkpoint(str(done))
            print(f"select: {name} fold {k}: held-out val video AUC {val_auc[name][-1]}", flush=True)
    rows = score_held_out(held_out, last, {m.path: fold_of[video_id_of(Path(m.path).name)] for m in held_out})
    table = auc_table(rows, list(candidates))
    mean = {n: float(np.nanmean([table[n][kind]["auc"] for kind in SELECT_KINDS])) for n in candidates}
    return {"folds": folds, "val_auc": val_auc, "auc": table, "mean": mean, "chosen": max(mean, key=lambda n: mean[n])}


def manifest_folds(shards: Path) -> dict[str, int]:
    """video id -> its manifest fold, for every ingested video."""
    from storage import fs
    from storage.tables import ManifestRow, read_table

    rows = read_table(fs.IngestLayout(str(shards)).manifest, ManifestRow)
    return {r.video_id: r.fold for r in rows if r.status == "ingested"}


def score_held_out(made: list[Made], checkpoints: dict[str, dict[int, str]], fold: dict[str, int]) -> list[dict]:
    """Each file (decoded once, ``avff predict``'s preprocessing) scored by every candidate's checkpoint of
    the file's fold (``checkpoints``: candidate -> fold -> checkpoint folder) -> rows as :func:`score_files`."""
    import torch

    from tasks.serve.predict import preprocess_for
    from tasks.serve.scorer import load_model

    models = {(n, k): load_model(c, device="cpu") for n, by in checkpoints.items() for k, c in by.items()}
    pre = preprocess_for(next(iter(models.values())))
    rows = []
    with face_detector(pre) as det:
        for m in made:
            row = {"video": Path(m.path).name, "kind": m.kind, "person": m.person, "source": m.source,
                   "fold": fold[m.path], **{n: float("nan") for n in checkpoints}}  # fmt: skip
            try:
                clips, _ = decoded_clips(m.path, pre, det)
            except VideoError:
                rows.append(row)
                continue
            for n in checkpoints:
                model = models[(n, fold[m.path])]
                with torch.no_grad():
                    row[n] = float(np.mean(model.predict_proba(**model_inputs(clips, model.config.img_size))))
            rows.append(row)
    return rows


def _weights(weights: dict[str, float]) -> str:
    """A fitted read-out's weights, as the doc states them."""
    return ", ".join(f"{k} {v:+.2f}" for k, v in weights.items())


def training_record(model_dir: Path, steps: int) -> dict:
    """The best epoch, its val video AUC and the per-epoch curve, from the last checkpoint's history."""
    import torch

    from storage.checkpoint import resolve_checkpoint

    last = Path(resolve_checkpoint(str(model_dir / "checkpoints" / "last.json")))
    history = torch.load(last / "state.pt", weights_only=False)["state"]["history"]
    keep = ("epoch", "train_loss", "val_loss", "val_video_auc")
    curve = [{k: h[k] for k in keep if k in h} for h in history]
    best = json.loads((model_dir / "checkpoints" / "best.json").read_text())["checkpoint"]
    best_epoch = int(best.split("-")[1])
    return {
        "best_epoch": best_epoch,
        "epochs": len(curve),
        "steps": steps,
        "history": curve,
        "val_video_auc": next((h.get("val_video_auc") for h in curve if h.get("epoch") == best_epoch), None),
    }


# ---------------------------------------------------------------- scoring


MODES = {
    # 16 frames 0.2 s apart, 3 clips back to back: 9.6 s, the AVFF setting (clips of a 3.2 s window)
    "spread 5 fps": PreprocessConfig(face_size=112, clip_mode="spread", max_clips=3),
    # the same 48 frames, consecutive at the video's rate: 3 x 0.64 s at 25 fps, back to back
    "native, same frames": PreprocessConfig(face_size=112, clip_mode="native", max_clips=3),
    # consecutive frames over the same time as the spread clips: 15 x 0.64 s at 25 fps
    "native, same time": PreprocessConfig(face_size=112, clip_mode="native", max_clips=15),
}


def _lip_sync(clips) -> float:
    finite = [v for v in (STATISTICS["lip_sync"](c) for c in clips) if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def score_files(made: list[Made], model_dir: Path, compare_modes: bool) -> list[dict]:
    """Per file: the model's P(FAKE) (mean over clips, ``avff predict``'s preprocessing and weights), the
    same for every epoch's checkpoint (``epoch k``: the learning curve on test people) and the hand-made
    lip-sync statistic on the same clips; with ``compare_modes`` the statistic in every MODES sampling."""
    import torch

    from tasks.serve.predict import preprocess_for
    from tasks.serve.scorer import load_model

    scorer = load_model(str(model_dir), device="cpu")
    pre = preprocess_for(scorer)
    rows, inputs = [], []
    with face_detector(pre) as det:
        for m in made:
            row = {"video": Path(m.path).name, "kind": m.kind, "person": m.person, "source": m.source,
                   "detail": m.detail, "model": float("nan"), "lip_sync": float("nan"), "clips": 0, "refused": ""}  # fmt: skip
            try:
                clips, _ = decoded_clips(m.path, pre, det)
            except VideoError as e:
                row["refused"] = e.reason
            else:
                x = model_inputs(clips, scorer.config.img_size)  # video, audio, mouth (N, 4), lips (N, T, 2)
                with torch.no_grad():
                    p = scorer.predict_proba(**x)
                row.update(model=float(np.mean(p)), lip_sync=_lip_sync(clips), clips=len(clips))
                inputs.append((row, x))
            for mode, cfg in MODES.items() if compare_modes else ():
                try:
                    row[mode] = _lip_sync(decoded_clips(m.path, cfg, det)[0])
                except VideoError:
                    row[mode] = float("nan")
            rows.append(row)
    for ckpt in sorted((model_dir / "checkpoints").glob("epoch-*")):
        at = load_model(str(ckpt), device="cpu")
        name = f"epoch {int(ckpt.name.split('-')[1])}"
        for row in rows:
            row[name] = float("nan")
        with torch.no_grad():
            for row, x in inputs:
                row[name] = float(np.mean(at.predict_proba(**x)))
    return rows


def auc_table(rows: list[dict], scores: list[str]) -> dict[str, dict[str, dict]]:
    """score -> fake kind -> AUC of its REAL (control; reencode for artefact; every control for generated)
    against that kind, 95 % interval over source clips, counts; on files every score in ``scores`` scored."""
    ok = [r for r in rows if all(np.isfinite(r[s]) for s in scores)]
    table: dict[str, dict[str, dict]] = {}
    for kind in FAKE_KINDS:
        fakes = [r for r in ok if r["kind"] == kind]
        if kind == "generated":
            reals = [r for r in ok if r["kind"] == "control"]
        else:  # paired: a source's REAL only where its fake was scored too, and the other way round
            real_kind = "reencode" if kind == "artefact" else "control"
            both = {r["source"] for r in fakes} & {r["source"] for r in ok if r["kind"] == real_kind}
            fakes = [r for r in fakes if r["source"] in both]
            reals = [r for r in ok if r["kind"] == real_kind and r["source"] in both]
        sel = reals + fakes
        y = np.array([r in fakes for r in sel], dtype=int)
        for s in scores:
            p = np.array([r[s] for r in sel], dtype=float)
            p = (
                p if s == "model" else 1 / (1 + np.exp(-p))
            )  # a statistic (a correlation, a sync peak) -> (0, 1), same order
            lo, hi = (
                bootstrap_auc_ci(y, p, groups=[r["source"] for r in sel], n_resamples=1000)
                if len(sel)
                else (np.nan,) * 2
            )
            table.setdefault(s, {})[kind] = {"auc": auc_or_nan(y, p), "lo": lo, "hi": hi, "real": int((y == 0).sum()),
                                             "fake": int(y.sum())}  # fmt: skip
    return table


def _cell(c: dict) -> str:
    return "n/a" if not np.isfinite(c["auc"]) else f"{c['auc']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def _auc(c: dict) -> str:
    return "n/a" if not np.isfinite(c["auc"]) else f"{c['auc']:.2f}"


def markdown(summary: dict, command: str) -> str:
    """The "Real footage" section of docs/results.md from a run's summary."""
    t, n = summary["auc"], summary["auc"]["model"]
    people = summary["people"]
    lines = [
        "## Real footage (`bench/real.py`)",
        "",
        f"Reproduce: `python bench/real.py {command}` ({summary['seconds'] / 60:.0f} min wall, "
        f"{summary['cpu_seconds'] / 60:.0f} CPU-min of this process on {os.cpu_count()} cores; per step, wall: "
        f"{', '.join(f'{k} {v:.0f} s' for k, v in summary['steps_seconds'].items())}; CPU: "
        f"{', '.join(f'{k} {v:.0f} s' for k, v in summary.get('steps_cpu_seconds', {}).items())}).",
        "",
        f"{summary['clips']} distinct REAL clips with sound (sha256-deduplicated) from `../shared/data/realav`; "
        f"a person is a repository folder (the footage names nobody). People split by the ingest's grouped split: "
        f"train {people['train']['people']} ({people['train']['videos']} videos), val {people['val']['people']} "
        f"({people['val']['videos']}), test {people['test']['people']} ({people['test']['videos']}): "
        f"{', '.join(summary['test_people'])}. Crops: `{summary.get('crop', 'box')}`"
        + (" with 25 fps lip tracks (`--lip-track`)" if summary.get("crop") == "landmarks" else "")
        + f". Model: `{summary['fusion']}` head, `tiny` preset"
        + (f" with {summary['overrides']}" if summary.get("overrides") else "")
        + ", stage 2 from random "
        f"init, {summary['train']['steps']} steps of batch {summary['batch']}, pseudo-fakes p={summary['pseudo_fakes']:g} "
        "(audio_shift, audio_swap, mouth_shuffle, face_resample), best val-video-AUC epoch "
        f"{summary['train']['best_epoch']} (val AUC {summary['train']['val_video_auc'] or float('nan'):.2f}), "
        + (
            f"its logits joined by the read-out fitted after training ({_weights(summary['readout'])}). "
            if summary.get("readout")
            else "its logits summed as trained (no read-out). "
        )
        + "AUC on the test people, REAL against each type, 95 % bootstrap interval over source clips:",
        "",
        "| fake type (test people) | model | hand-made lip-sync statistic | prior | REAL / FAKE |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {"shift": "audio shifted 0.4-1 s (vs the same clips unshifted)", "swap": "audio swapped with another person's",
             "artefact": "lower face pixelated (vs the same re-encode without; never trained on)",
             "generated": "realav's generated fakes (vs the test people's controls)"}  # fmt: skip
    for kind in FAKE_KINDS:
        lines.append(f"| {names[kind]} | {_cell(n[kind])} | {_cell(t['lip_sync'][kind])} | 0.50 | "
                     f"{n[kind]['real']} / {n[kind]['fake']} |")  # fmt: skip
    per = summary.get("steps_per_epoch", 0)
    for e in summary.get("epochs", []):
        c = t[e]
        lines.append(
            f"| model after {e} (step {int(e.split()[1]) * per}): shift / swap / artefact / generated | "
            f"{' / '.join(_auc(c[k]) for k in FAKE_KINDS)} | | | |"
        )
    for mode in MODES if summary.get("compare_modes") else ():
        lines.append(
            f"| hand-made, {mode} at 112 px: shift / swap | | {_cell(t[mode]['shift'])} / {_cell(t[mode]['swap'])} | | |"
        )
    return "\n".join(lines + selection_lines(summary.get("selection"))) + "\n"


def selection_lines(selection: dict | None) -> list[str]:
    """The ``--select`` table: each candidate's pooled out-of-fold AUC per fake type on the train and val people."""
    if not selection:
        return []
    folds, t = selection["folds"], selection["auc"]
    lines = [
        "",
        f"**Model chosen by `--select`**: grouped cross-validation on the train and val people only ({len(folds)} "
        "folds of people; per fold, trained on the other folds' people as above and scored, after the last epoch, "
        "on the held-out people's files; out-of-fold scores pooled). A person here is a repository folder, and "
        "realav's generated fakes come one generator per folder, so their column is a generator the model never "
        f"saw. Chosen by the mean over {', '.join(SELECT_KINDS)}: **{selection['chosen']}**.",
        "",
        "| candidate | " + " | ".join(SELECT_KINDS) + " | mean | val AUC per fold (last epoch) |",
        "|---|" + "---:|" * (len(SELECT_KINDS) + 1) + "---|",
    ]
    for name in t:
        cells = " | ".join(_cell(t[name][kind]) for kind in SELECT_KINDS)
        per_fold = ", ".join(
            "n/a" if a is None or not np.isfinite(a) else f"{a:.2f}" for a in selection["val_auc"][name]
        )
        lines.append(f"| {name} | {cells} | {selection['mean'][name]:.2f} | {per_fold} |")
    counts = t[next(iter(t))]
    sizes = " | ".join(f"{counts[k]['real']} / {counts[k]['fake']}" for k in SELECT_KINDS)
    lines.append(f"| REAL / FAKE files | {sizes} | | |")
    return lines


def write_doc(path: Path, section: str) -> None:
    """``section`` between BEGIN and END in ``path`` (appended with the markers when absent); the rest is kept."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the made clips, shards, model/, scores.csv, summary.json")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "realav"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clips-per-person", type=int, default=None, help="at most this many REAL clips per person")
    ap.add_argument("--max-clips", type=int, default=6, help="clips per video ingested (3.2 s each)")
    ap.add_argument(
        "--clip-mode",
        default="spread",
        choices=("spread", "native"),
        help="native: 16 consecutive frames "
        "at the video's own rate (0.64 s at 25 fps), 64 mel columns whatever the rate",
    )
    ap.add_argument("--face-size", type=int, default=64)
    ap.add_argument(
        "--crop",
        default="landmarks",
        choices=("box", "landmarks"),
        help="landmarks: aligned crops, each clip's mouth box and its lips' opening and width per frame",
    )
    chosen = CANDIDATES[CHOSEN]  # the default model: the candidate --select chose (docs/results.md)
    ap.add_argument("--fusion", default=chosen["fusion"], help=f"the head (default: {CHOSEN!r}'s)")
    ap.add_argument("--overrides", default=json.dumps(chosen["overrides"]),
                    help="model config overrides, JSON (e.g. '{\"sync_pixels\": false}'; default: %(default)s)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps of stage 2")
    ap.add_argument("--epochs", type=int, default=6, help="the steps in this many epochs (one val each)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pseudo-fakes", type=float, default=0.5, help="share of REAL training clips made pseudo-fakes")
    ap.add_argument(
        "--readout",
        choices=("end_to_end", "fitted"),
        default=None,
        help="how the model's logits are joined (TrainSettings.readout; default: its default)",
    )
    ap.add_argument("--compare-modes", action="store_true", help="also the hand-made statistic in MODES' samplings")
    ap.add_argument("--select", action="store_true", help="choose the model among CANDIDATES by grouped CV on the "
                    "train and val people first (about 5x the training time), then train it as usual")  # fmt: skip
    ap.add_argument("--score-only", action="store_true", help="reuse --out's made files, shards and model/")
    ap.add_argument("--doc", help="write the Real footage section of this markdown file (docs/results.md)")
    args = ap.parse_args(argv)
    import torch

    # without PREFECT_API_URL the ingest flow starts a temporary server: on a loaded machine it needs minutes
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    torch.set_num_threads(1)  # a shared 2-core box: intra-op threads spin (tests/conftest.py)
    out = Path(args.out)
    steps: dict[str, float] = {}  # wall seconds per step
    cpu: dict[str, float] = {}  # CPU seconds of this process per step (the ingest runs in it: executor local)

    def lap(name: str, since: tuple[float, float]) -> tuple[float, float]:
        steps[name], cpu[name] = time.perf_counter() - since[0], time.process_time() - since[1]
        print(f"{name}: {steps[name]:.0f} s wall, {cpu[name]:.0f} s CPU", flush=True)
        return time.perf_counter(), time.process_time()

    t = time.perf_counter(), time.process_time()
    made, splits, seed = build_footage(args.data, out / "data" / "footage", args.seed, args.clips_per_person,
                                       PreprocessConfig().spread_fit_seconds)  # fmt: skip
    t = lap("make files", t)
    if not args.score_only:
        ingest(
            out / "data" / "footage", out / "shards", seed, args.max_clips, args.clip_mode, args.face_size, args.crop
        )
    people = check_splits(out / "shards", made, splits)
    t = lap("ingest", t)
    selection = None
    if args.score_only:  # the earlier run's training record and times (summary.json, or earlier.json by hand)
        earlier = json.loads(next(p for p in (out / "summary.json", out / "earlier.json") if p.exists()).read_text())
        trained = training_record(out / "model", args.steps)
        selection = earlier.get("selection")
        steps.update({k: v for k, v in earlier["steps_seconds"].items() if k not in ("make files", "score")})
        cpu.update({k: v for k, v in earlier.get("steps_cpu_seconds", {"earlier run, all steps": earlier["cpu_seconds"]}).items()
                    if k not in ("make files", "score")})  # fmt: skip
    else:
        if args.select:
            selection = select_model(out / "shards", out, args, CANDIDATES, made, splits)
            args.fusion, args.overrides = (CANDIDATES[selection["chosen"]][k] for k in ("fusion", "overrides"))
            args.overrides = json.dumps(args.overrides)
            t = lap("select", t)
        trained = train(out / "shards", out / "model", args)
        t = lap("train", t)
    rows = score_files([m for m in made if splits[m.person] == "test"], out / "model", args.compare_modes)
    lap("score", t)
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    epochs = [k for k in rows[0] if k.startswith("epoch ")]
    scores = ["model", "lip_sync", *epochs, *(MODES if args.compare_modes else ())]
    kept = read_decision(resolve_checkpoint(str(out / "model" / "checkpoints" / "best.json")))
    readout = kept.readout["weights"] if kept is not None and kept.readout else None  # the fitted join, if any
    summary = {"clips": len({m.source for m in made if m.kind == "control"}), "people": people,
               "test_people": sorted(p for p, s in splits.items() if s == "test"), "split_seed": seed, "fusion": args.fusion, "overrides": json.loads(args.overrides),
               "batch": args.batch, "pseudo_fakes": args.pseudo_fakes, "compare_modes": args.compare_modes, "crop": args.crop,
               "readout": readout, "train": trained, "selection": selection, "auc": auc_table(rows, scores), "refused": sorted({r["refused"] for r in rows} - {""}),
               "epochs": epochs, "steps_per_epoch": args.steps // args.epochs,
               "seconds": round(sum(steps.values()), 1), "cpu_seconds": round(sum(cpu.values()), 1),
               "steps_seconds": {k: round(v, 1) for k, v in steps.items()},
               "steps_cpu_seconds": {k: round(v, 1) for k, v in cpu.items()}}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    command = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]) if a != "--score-only")
    section = markdown(summary, command)
    print("\n" + section)
    if args.doc:
        write_doc(Path(args.doc), section)
    return summary


if __name__ == "__main__":
    main()
