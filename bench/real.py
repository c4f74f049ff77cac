"""Lip sync on real faces: which clip sampling keeps it, 5 fps spread or the video's own rate?

    python bench/real.py --out /tmp/real [--data ../shared/data/realav] [--heldout 0.3]

Every number the project had came from its own generator. This takes the real talking-face
footage (``../shared/data/realav``: DFDC-format folders, ``provenance.json``), deduplicates it by
sha256, holds out a share of its people (a person = the repository folder a clip came from, the
closest to an identity the footage names; ``--heldout 1`` holds out all of them) and makes, from
each held-out REAL clip, three files with the same video packets (copied, never re-encoded) and
the sound re-encoded the same way:

- ``control``: the clip's own sound (REAL);
- ``shift``: the sound moved 0.4-1 s later or earlier (FAKE, a lip-sync fake);
- ``swap``: another held-out person's speech (FAKE).

Each file goes through the ingest preprocessing and the shard round trip (``decoded_clips``, what
training and ``avff predict`` read) in two clip modes and is scored with the hand-made lip-sync
statistic (``tasks/evaluate/handmade.py``: minus the correlation of mouth darkness and loudness),
the mean over a video's clips. The table is the AUC of control against each fake type, with a
bootstrap interval over source clips (a clip and its fakes); the prior (a constant score) has AUC 0.5. Written to ``--out``:
``data/`` (the held-out files and their metadata.json), ``scores.csv``, ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from storage.shard_schema import FAKE, REAL
from tasks.evaluate.handmade import STATISTICS
from tasks.evaluate.metrics import auc_or_nan, bootstrap_auc_ci
from tasks.ingest.audio import decode_audio
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.scan import scan_dfdc
from tasks.ingest.video import VideoError, probe
from tasks.serve.predict import decoded_clips

RATE = 16000  # the sound of every generated file, mono AAC
SHIFT_S = (0.4, 1.0)


@dataclass(frozen=True)
class RealClip:
    path: str
    person: str  # the repository folder: one person or a few, never one person across two folders by design
    video_id: str


@dataclass(frozen=True)
class Made:
    path: str
    kind: str  # control | shift | swap
    person: str
    source: str  # the REAL clip it was made from
    detail: str  # the shift in seconds, or the swapped-in clip


def real_clips(data: str) -> list[RealClip]:
    """The REAL clips of every part, once each by content (sha256), those with sound only."""
    seen: set[str] = set()
    out = []
    for e in scan_dfdc(data).entries:
        path = os.path.join(data, e.rel_path)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if e.label != REAL or digest in seen:
            continue
        seen.add(digest)
        try:
            if not probe(path).has_audio:
                continue
        except VideoError:
            continue
        out.append(RealClip(path, e.part, e.video_id))
    return out


def held_out(clips: list[RealClip], share: float, seed: int) -> list[RealClip]:
    """The clips of the people whose seeded hash falls below ``share`` (a pure function of the name)."""
    def u(person: str) -> float:
        return int(hashlib.sha256(f"{seed}:heldout:{person}".encode()).hexdigest()[:12], 16) / 16**12

    return [c for c in clips if u(c.person) < share]


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
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, :], np.float32), format="flt", layout="mono")  # (1, n)
        frame.sample_rate, frame.pts = RATE, 0
        out.mux(a_out.encode(frame))
        out.mux(a_out.encode())


def _sound(path: str) -> np.ndarray:
    """(n,) float32 at RATE, sample 0 at the video's t=0 (as ingest aligns it)."""
    return decode_audio(path, RATE, max_seconds=120.0, start_time=probe(path).start_time)


def _fit(wave: np.ndarray, n: int) -> np.ndarray:
    """wave repeated or cut to n samples."""
    return np.resize(wave, n) if wave.size else np.zeros(n, np.float32)


def make_fakes(clips: list[RealClip], out: Path, seed: int) -> list[Made]:
    """control, shift and swap of each clip, in out/ with a DFDC metadata.json."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: list[Made] = []
    sounds = {c.video_id: _sound(c.path) for c in clips}
    for i, c in enumerate(clips):
        wave = sounds[c.video_id]
        shift = float(rng.uniform(*SHIFT_S)) * (1 if rng.random() < 0.5 else -1)
        k = int(round(abs(shift) * RATE))
        pad = np.zeros(k, np.float32)
        shifted = np.concatenate([pad, wave])[: wave.size] if shift > 0 else np.concatenate([wave[k:], pad])
        others = [o for o in clips if o.person != c.person] or [o for o in clips if o is not c]
        other = others[int(rng.integers(len(others)))]
        for kind, w, detail in (("control", wave, ""), ("shift", shifted, f"{shift:+.2f}s"),
                                ("swap", _fit(sounds[other.video_id], wave.size), other.video_id)):  # fmt: skip
            dst = out / f"{c.video_id}__{kind}.mkv"
            write_with_sound(c.path, str(dst), w)
            made.append(Made(str(dst), kind, c.person, c.video_id, detail))
    meta = {Path(m.path).name: {"label": REAL if m.kind == "control" else FAKE,
                                "original": None if m.kind == "control" else f"{m.source}__control.mkv"}
            for m in made}  # fmt: skip
    (out / "metadata.json").write_text(json.dumps(meta, indent=1))
    return made


MODES = {
    # 16 frames 0.2 s apart, 3 clips back to back: 9.6 s, the AVFF setting (clips of a 3.2 s window)
    "spread 5 fps": PreprocessConfig(face_size=112, clip_mode="spread", max_clips=3),
    # the same 48 frames, consecutive at the video's rate: 3 x 0.64 s at 25 fps, back to back
    "native, same frames": PreprocessConfig(face_size=112, clip_mode="native", max_clips=3),
    # consecutive frames over the same time as the spread clips: 15 x 0.64 s at 25 fps
    "native, same time": PreprocessConfig(face_size=112, clip_mode="native", max_clips=15),
}


def score(path: str, cfg: PreprocessConfig, detector) -> tuple[float, int, str]:
    """(the lip-sync statistic's mean over the video's clips, clips, refusal reason or '')."""
    try:
        clips, _ = decoded_clips(path, cfg, detector)
    except VideoError as e:
        return float("nan"), 0, e.reason
    values = [STATISTICS["lip_sync"](c) for c in clips]
    finite = [v for v in values if np.isfinite(v)]
    return (float(np.mean(finite)) if finite else float("nan")), len(clips), ""


def auc_table(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """mode -> fake kind -> AUC of control vs that kind, its interval over source clips, n, on videos every mode scored."""
    ok = {(r["source"], r["kind"]) for r in rows if all(np.isfinite(r[m]) for m in MODES)}
    table: dict[str, dict[str, dict]] = {}
    for mode in MODES:
        for kind in ("shift", "swap"):
            sel = [r for r in rows if r["kind"] in ("control", kind) and (r["source"], "control") in ok
                   and (r["source"], kind) in ok]  # fmt: skip
            y = np.array([r["kind"] != "control" for r in sel], dtype=int)
            p = (1 + np.array([r[mode] for r in sel])) / 2  # a correlation in [-1, 1] -> [0, 1], same order
            # resampling source clips (a clip with its fakes): few people are held out, a clip is the unit here
            lo, hi = bootstrap_auc_ci(y, p, groups=[r["source"] for r in sel], n_resamples=1000)
            table.setdefault(mode, {})[kind] = {"auc": auc_or_nan(y, p), "lo": lo, "hi": hi, "real": int((y == 0).sum()),
                                                "fake": int(y.sum())}  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the generated clips, scores.csv and summary.json")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "realav"))
    ap.add_argument("--heldout", type=float, default=0.3, help="share of people held out (1: everyone)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    clips = real_clips(args.data)
    test = held_out(clips, args.heldout, args.seed)
    print(f"{len(clips)} distinct REAL clips with sound, {len({c.person for c in clips})} people (folders); "
          f"held out {len(test)} clips of {len({c.person for c in test})}")  # fmt: skip
    made = make_fakes(test, out / "data" / "heldout", args.seed)
    rows = []
    with face_detector(PreprocessConfig()) as detector:
        for m in made:
            row = {"video": Path(m.path).name, "kind": m.kind, "person": m.person, "source": m.source, "detail": m.detail}
            for mode, cfg in MODES.items():
                row[mode], row[f"{mode} clips"], row[f"{mode} refused"] = score(m.path, cfg, detector)
            rows.append(row)
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = auc_table(rows)
    summary = {"clips": len(clips), "heldout_clips": len(test), "heldout_people": sorted({c.person for c in test}),
               "seconds": round(time.perf_counter() - t0, 1), "auc": table,
               "refused": {mode: sorted({r[f"{mode} refused"] for r in rows} - {""}) for mode in MODES}}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n| clip sampling | shift: AUC [95 % CI] | swap: AUC [95 % CI] | REAL / FAKE per type |\n|---|---:|---:|---:|")
    for mode, kinds in table.items():
        cells = " | ".join(f"{k['auc']:.2f} [{k['lo']:.2f}, {k['hi']:.2f}]" for k in kinds.values())
        print(f"| {mode} | {cells} | {kinds['shift']['real']} / {kinds['shift']['fake']} |")
    print("| prior (a constant score) | 0.50 | 0.50 | |")
    print(f"\n{summary['seconds']} s; per-video scores in {out / 'scores.csv'}")


if __name__ == "__main__":
    main()
