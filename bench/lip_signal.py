"""Where is the lip-sync signal of a real face? The mouth's darkness against the landmarks' lips.

    python bench/lip_signal.py --footage DIR/data/footage [--people A,B] [--out lips.json]

On the files ``bench/real.py`` makes from real talking clips (``control``: the clip's own sound;
``shift``: the sound moved 0.4-1 s; ``swap``: another person's speech), this decodes the first 10 s
of every control / shift / swap file at its own frame rate, finds the face mesh on every frame
(:class:`tasks.ingest.landmarks.LandmarkFaceDetector`) and measures three per-frame mouth signals:

- ``dark``    minus the mean grey level of the box around the lips (what the hand-made statistic and
              the sync branch read from pixels when a clip has no landmarks);
- ``op``      the lips' inner gap over the eyes-to-mouth distance (:func:`tasks.ingest.landmarks.lip_shape`);
- ``op-wid``  the gap minus the mouth's width, each standardised (:func:`tasks.evaluate.handmade.lip_opening`).

Each is correlated with the sound's loudness (log energy in +-40 ms around each frame's time) in the
samplings a model or a statistic could use: ``3 clips 5 fps`` (the ingest's default: 3 clips of 16
frames 0.2 s apart, correlation per clip then the mean), ``10 s 5 fps`` and ``10 s native`` (one
correlation over every frame), and ``3 clips 25 fps``: the same 3 clips' spans with every frame's lips
resampled to 25 fps, as ingest's ``lip_track`` stores them (:func:`tasks.ingest.landmarks.lip_track`).
On those, ``op-wid peak`` is the hand-made statistic a clip with a lip track gets
(:func:`tasks.evaluate.handmade.track_sync`: the lag at which the opening correlates best with the
500-2000 Hz loudness, near 0 or far). Printed: AUC of ``control`` against ``shift`` and ``swap``
(higher = REAL), per signal and sampling. Nothing is trained: this says which signal a learned sync
branch should be given, on people it was never tuned on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
from storage.shard_schema import LIP_TRACK_FPS  # noqa: E402
from tasks.evaluate.handmade import lip_opening, track_sync  # noqa: E402
from tasks.evaluate.metrics import auc_or_nan  # noqa: E402
from tasks.ingest.audio import SILENCE_LOG_MEL, decode_audio, default_mel, log_mel, mel_window  # noqa: E402
from tasks.ingest.landmarks import LIPS, LandmarkFaceDetector, lip_shape, lip_track, pose_of  # noqa: E402

SECONDS, RATE, HALF_WINDOW_S = 10.0, 16000, 0.04
KINDS = ("control", "shift", "swap")


def frames_of(path: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Every frame of the first SECONDS, RGB, and their times (s)."""
    frames, times = [], []
    with av.open(path) as c:
        v = c.streams.video[0]
        for f in c.decode(v):
            t = float(f.pts * v.time_base)
            if t > SECONDS:
                break
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(t)
    return frames, np.array(times)


def mouth_signals(frames: list[np.ndarray], det: LandmarkFaceDetector) -> dict[str, np.ndarray] | None:
    """Per frame: darkness around the lips, the gap, the width (NaN where the mesh finds no face)."""
    found = det.detect(frames[0])
    if not found:
        return None
    box = np.array(found[0][0], float)
    dark, shape = [], []
    for rgb in frames:
        pts = det.landmarks(rgb, box)
        if pts is None:
            dark.append(np.nan)
            shape.append([np.nan, np.nan])
            continue
        box = np.concatenate([pts.min(0), pts.max(0)])  # follow the face
        lips = pts[list(LIPS)]
        (x0, y0), (x1, y1) = lips.min(0), lips.max(0)
        pad_x, pad_y = 0.15 * (x1 - x0), 0.15 * (y1 - y0)
        patch = rgb[max(int(y0 - pad_y), 0) : int(y1 + pad_y) + 1, max(int(x0 - pad_x), 0) : int(x1 + pad_x) + 1]
        dark.append(-float(patch.mean()))
        shape.append(lip_shape(pts, pose_of(pts)[2]))
    shape = np.array(shape)  # (N, 2)
    return {"dark": np.array(dark), "op": shape[:, 0], "shape": shape}


def loudness(wave: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(N,) log energy of the sound within +-HALF_WINDOW_S of each time."""
    out = []
    for t in times:
        seg = wave[max(int((t - HALF_WINDOW_S) * RATE), 0) : max(int((t + HALF_WINDOW_S) * RATE), 1)]
        out.append(np.log(np.mean(seg.astype(np.float64) ** 2) + 1e-8) if len(seg) else np.nan)
    return np.array(out)


def corr(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 5 or x[ok].std() == 0 or y[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def correlations(sig: dict[str, np.ndarray], loud: np.ndarray, fps: float) -> dict[str, float]:
    """``signal / sampling`` -> correlation with loudness."""
    step = max(1, round(fps / 5.0))  # 5 fps
    out = {}
    for name in ("dark", "op", "op-wid"):
        ok = np.isfinite(sig["shape"]).all(1)

        def series(idx: np.ndarray) -> np.ndarray:
            if name != "op-wid":
                return sig[name][idx]
            x = np.full(len(idx), np.nan)
            good = ok[idx]
            if good.sum() >= 2:
                x[good] = lip_opening(sig["shape"][idx][good].tolist())
            return x

        every = np.arange(len(loud))
        clips = [np.arange(k * 16 * step, (k + 1) * 16 * step, step) for k in range(3)]
        per_clip = [corr(series(i[i < len(loud)]), loud[i[i < len(loud)]]) for i in clips if (i < len(loud)).sum() >= 8]
        out[f"{name} / 3 clips 5 fps"] = float(np.nanmean(per_clip)) if np.isfinite(per_clip).any() else float("nan")
        out[f"{name} / 10 s 5 fps"] = corr(series(every[::step]), loud[::step])
        out[f"{name} / 10 s native"] = corr(series(every), loud)
    return out


def track_measures(shape: np.ndarray, times: np.ndarray, wave: np.ndarray) -> dict[str, float]:
    """The 3 clips' spans (3.2 s from 0, 3.2, 6.4 s) with the lips at 25 fps as ingest's lip track: the
    opening's lag-0 correlation with the loudness, and the hand-made sync peak; each the mean over clips."""
    spec = default_mel()
    mel = log_mel(wave, spec)  # (F, Tm)
    found = [None if not np.isfinite(row).all() else row for row in shape]
    lag0, peak = [], []
    for k in range(3):
        grid = k * 3.2 + np.arange(80) / LIP_TRACK_FPS  # (80,)
        inside = (times >= grid[0] - 0.02) & (times <= grid[-1] + 0.02)
        track = lip_track(times[inside], [f for f, i in zip(found, inside) if i], grid)
        if track is None or grid[-1] > times[-1]:
            continue
        window = mel_window(mel, grid[0], 320, spec.hop_s, SILENCE_LOG_MEL)  # (F, 320)
        lag0.append(corr(lip_opening(track.tolist()), loudness(wave, grid)))
        peak.append(track_sync(track.tolist(), window, spec.hop_s))
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
    return {"op-wid / 3 clips 25 fps": mean(lag0), "op-wid peak / 3 clips 25 fps": mean(peak)}


def measure(footage: Path, people: set[str] | None) -> list[dict]:
    meta = json.loads((footage / "metadata.json").read_text())
    rows = []
    with LandmarkFaceDetector() as det:
        for name in sorted(meta):
            source, kind = name.rsplit("__", 1)
            kind = kind.split(".")[0]
            person = "__".join(name.split("__")[:2])
            if kind not in KINDS or (people and person not in people):
                continue
            path = str(footage / name)
            frames, times = frames_of(path)
            sig = mouth_signals(frames, det) if len(frames) >= 20 else None
            if sig is None:
                continue
            fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
            wave = decode_audio(path, RATE)
            rows.append({"file": name, "kind": kind, "person": person, "source": source,
                         **correlations(sig, loudness(wave, times), fps),
                         **track_measures(sig["shape"], times, wave)})  # fmt: skip
            print(kind, name[:60], flush=True)
    return rows


def auc_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    """measure -> fake kind -> AUC of control against it (higher correlation = REAL), paired sources only."""
    by = {}
    for r in rows:
        by.setdefault(r["source"], {})[r["kind"]] = r
    out = {}
    for key in [k for k in rows[0] if " / " in k]:
        for fake in ("shift", "swap"):
            pairs = [(d["control"][key], d[fake][key]) for d in by.values() if "control" in d and fake in d]
            pairs = [p for p in pairs if np.isfinite(p).all()]
            y = [0] * len(pairs) + [1] * len(pairs)
            s = [-c for c, _ in pairs] + [-f for _, f in pairs]
            out.setdefault(key, {})[fake] = auc_or_nan(np.array(y), np.array(s))
            out[key]["pairs"] = len(pairs)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--footage", required=True, help="bench/real.py's DIR/data/footage")
    ap.add_argument("--people", default="", help="comma-separated people (repository folders); default: all")
    ap.add_argument("--out", help="write the per-file correlations and the table as JSON here")
    args = ap.parse_args(argv)
    rows = measure(Path(args.footage), set(args.people.split(",")) if args.people else None)
    table = auc_table(rows)
    print(f"\n{len({r['person'] for r in rows})} people, {len({r['source'] for r in rows})} source clips")
    print("| signal / sampling | control vs shift | control vs swap | pairs |\n|---|---:|---:|---:|")
    for key, v in table.items():
        print(f"| {key} | {v['shift']:.2f} | {v['swap']:.2f} | {v['pairs']} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "auc": table}, indent=1))
    return table


if __name__ == "__main__":
    main()
