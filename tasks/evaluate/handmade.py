"""Hand-made baselines: two statistics of a decoded clip, no learning.

- ``lip_sync``   minus the correlation of the mouth's opening with the loudness of the mel
                 frames at each face frame's time. The opening is the landmarks' (the lips'
                 gap minus the mouth's width, each standardised over the clip: an open mouth
                 is taller and narrower) where the clip has them, else the mouth region's
                 darkness (an open mouth is darker). REAL clips correlate; shifted, swapped or
                 decorrelated audio does not. Higher = more FAKE-like. A clip with a 25 fps lip
                 track (ingest's ``lip_track``) is scored by its sync peak instead
                 (:func:`sync_peak`): where the correlation peaks in lag, not how high it is.
- ``sharpness``  minus the variance of the Laplacian of the face centre's grey levels, mean
                 over frames: a blurred, resampled or blended face has less fine detail than
                 a camera's. Higher = smoother = more FAKE-like.

If a statistic separates REAL from a fake type and a learned model does not, the signal
survived ingest and the model failed to learn it. Inputs are a :class:`storage.shard_schema.DecodedClip`'s
arrays: frames (T, H, W, 3) uint8 face crops, mel (F, Tm) log-mel.

Every training run scores its val and test clips with both (the evaluation loader measures them as
it reads the clips: ``make_loader(statistics=STATISTICS)``) and reports them beside the prior
baseline (:func:`baseline_metrics`): ``test_baselines_video_lip_sync_auc`` and the like.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from avff_model.crop_geometry import MOUTH_BOX as MOUTH_BOX  # re-exported: the template's mouth box
from avff_model.crop_geometry import mouth_fractions, pixel_slices
from avff_model.inputs import mel_band
from avff_model.signals import SYNC_BAND_HZ, TRACK_FAR, TRACK_MAX_LAG, TRACK_MIN_OVERLAP, TRACK_NEAR
from storage.shard_schema import FAKE, LIP_TRACK_FPS, REAL, DecodedClip
from tasks.evaluate.metrics import binary_metrics

# (top, bottom, left, right) as fractions of the face crop; the mouth's is the crop geometry's
# (MOUTH_BOX, or the clip's stored mouth box: avff_model/crop_geometry.py)
CENTRE_BOX = (0.25, 0.75, 0.25, 0.75)


def _grey(frames: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """frames (T, H, W, 3) uint8 -> (T, h, w) float32 grey levels inside ``box``; cropped before the
    conversion (the same numbers, a fraction of the work: a training run measures every val/test clip)."""
    rows, cols = pixel_slices(box, *frames.shape[1:3])
    return frames[:, rows, cols].astype(np.float32).mean(-1)


def mouth_darkness(frames: np.ndarray, mouth_box: list[float] | None = None) -> np.ndarray:
    """frames (T, H, W, 3) uint8, the clip's mouth box (crop pixels; None: the template's) -> (T,)
    minus the mean grey level of the mouth box (darker = open)."""
    box = mouth_fractions(mouth_box, frames.shape[1])
    return -_grey(frames, box).mean((1, 2))


def lip_opening(lip_shape: list[list[float]]) -> np.ndarray:
    """(T, 2) per frame the lips' gap and the mouth's width (``ClipMeta.lip_shape``) -> (T,) the gap
    minus the width, each standardised over the clip (a still one counts as 0).

    Why both (``python bench/lip_signal.py``, 3 clips of 16 frames at 5 fps): on 39 real talking
    clips of bench/real.py's test people, the gap alone separates shifted / swapped sound at AUC
    0.68 / 0.71, the gap minus the width 0.76 / 0.81 (the darkness: 0.64 / 0.67); the width alone
    anti-correlates with loudness. On 47 clips of 10 other people: gap minus width 0.70 / 0.67, gap
    alone 0.60 / 0.62, darkness 0.49 / 0.48 (docs/results.md, "Real footage").
    """
    shape = np.asarray(lip_shape, np.float64)  # (T, 2)
    centred = shape - shape.mean(0)
    z = centred / np.maximum(centred.std(0), 1e-6)
    return z[:, 0] - z[:, 1]


def mouth_motion(frames: np.ndarray, mouth_box: list[float] | None = None,
                 lip_shape: list[list[float]] | None = None) -> np.ndarray:  # fmt: skip
    """(T,) how open the mouth is per frame: the landmarks' :func:`lip_opening` where the clip has
    them, else :func:`mouth_darkness`."""
    return lip_opening(lip_shape) if lip_shape is not None else mouth_darkness(frames, mouth_box)


def loudness_at(mel: np.ndarray, times_s: np.ndarray, hop_s: float) -> np.ndarray:
    """mel (F, Tm) log-mel -> (T,) log energy averaged over +-40 ms around each time in ``times_s``.

    Centred on the time, as the sync branch pairs a frame with its sound (avff_model/signals.py):
    a window starting at the frame's time would pair it with the sound after it.
    """
    energy = np.log(np.exp(mel.astype(np.float32)).sum(0))  # (Tm,)
    at = np.clip(np.round(times_s / hop_s).astype(int), 0, len(energy) - 1)
    return np.array([energy[max(0, i - 4) : i + 5].mean() for i in at])


def sync_correlation(frames: np.ndarray, mel: np.ndarray, fps: float, hop_s: float,
                     mouth_box: list[float] | None = None, lip_shape: list[list[float]] | None = None) -> float:  # fmt: skip
    """frames (T, H, W, 3) uint8, mel (F, Tm) -> correlation of mouth opening (:func:`mouth_motion`)
    and loudness (NaN if flat)."""
    mouth = mouth_motion(frames, mouth_box, lip_shape)
    loud = loudness_at(mel, np.arange(len(mouth)) / fps, hop_s)
    if mouth.std() == 0 or loud.std() == 0:
        return float("nan")
    return float(np.corrcoef(mouth, loud)[0, 1])


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < TRACK_MIN_OVERLAP or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def sync_peak(opening: np.ndarray, loud: np.ndarray, near: int = TRACK_NEAR, far: int = TRACK_FAR,
              max_lag: int = TRACK_MAX_LAG) -> float:  # fmt: skip
    """(K,) mouth opening and (K,) loudness at the same steps -> the best correlation within ``near``
    steps of lag 0 minus the best beyond ``far`` (lags up to ``max_lag``; the sound moved by the lag,
    each lag's correlation over the overlap). Own sound peaks near 0 (> 0); a sound moved 0.4-1 s
    peaks far (< 0); an unrelated one anywhere. NaN when either is flat.

    Why (``python bench/lip_signal.py``, docs/results.md "Real footage"): with a 25 fps lip track over
    each clip's 3.2 s, the lag-0 correlation separates own from shifted / swapped sound at AUC
    0.68 / 0.68 on 10 people's real clips, this peak at 0.87 / 0.80 (0.94 / 0.88 on 5 other people,
    not used to choose it; the lag-0 correlation there 0.73 / 0.70).
    """
    k = len(opening)
    reach = min(max_lag, k - TRACK_MIN_OVERLAP)
    lags = range(-reach, reach + 1)
    profile = {lag: _pearson(opening[max(0, -lag) : k - max(0, lag)], loud[max(0, lag) : k - max(0, -lag)])
               for lag in lags}  # fmt: skip
    close = [v for lag, v in profile.items() if abs(lag) <= near and np.isfinite(v)]
    away = [v for lag, v in profile.items() if abs(lag) > far and np.isfinite(v)]
    if not close or not away:
        return float("nan")
    return max(close) - max(away)


def band_loudness_at(mel: np.ndarray, times_s: np.ndarray, hop_s: float, band_hz=SYNC_BAND_HZ) -> np.ndarray:
    """:func:`loudness_at` over the mel bins inside ``band_hz`` (speech's band, where the lips move it)."""
    band = mel_band(mel.shape[0], *band_hz)
    return loudness_at(mel[band], times_s, hop_s)


def track_sync(lip_track: list[list[float]], mel: np.ndarray, hop_s: float) -> float:
    """A clip's (K, 2) 25 fps lip track and its mel (starting at the track's first step) -> :func:`sync_peak`
    of the lips' opening against the band loudness."""
    opening = lip_opening(lip_track)
    loud = band_loudness_at(mel, np.arange(len(opening)) / LIP_TRACK_FPS, hop_s)
    return sync_peak(opening, loud)


def laplacian_variance(frames: np.ndarray, box: tuple[float, float, float, float] = CENTRE_BOX) -> float:
    """frames (T, H, W, 3) uint8 -> mean over frames of the variance of the 4-neighbour Laplacian
    of the grey levels inside ``box`` (the face centre by default)."""
    g = _grey(frames, box)  # (T, h, w)
    lap = g[:, 1:-1, :-2] + g[:, 1:-1, 2:] + g[:, :-2, 1:-1] + g[:, 2:, 1:-1] - 4 * g[:, 1:-1, 1:-1]  # (T, h-2, w-2)
    return float(lap.var(axis=(1, 2)).mean())


def lip_sync(c: DecodedClip) -> float:
    """Minus the clip's mouth/loudness correlation (the landmarks' lip shape where the clip has it), or
    minus its lip track's sync peak where it has one: higher = more FAKE-like (NaN when either is flat)."""
    if getattr(c.meta, "lip_track", None) is not None:
        return -track_sync(c.meta.lip_track, c.mel.astype(np.float32), c.meta.mel_hop_s)
    return -sync_correlation(c.frames, c.mel, c.meta.fps, c.meta.mel_hop_s, c.meta.mouth_box, c.meta.lip_shape)


def sharpness(c: DecodedClip) -> float:
    """Minus the Laplacian variance of the clip's face centre: higher = smoother = more FAKE-like."""
    return -laplacian_variance(c.frames)


# name -> clip -> score, oriented so that a higher score means more FAKE-like; plain functions, not
# lambdas, so a DataLoader worker started by spawn can be handed them
STATISTICS: dict[str, Callable[[DecodedClip], float]] = {"lip_sync": lip_sync, "sharpness": sharpness}
# the metrics a statistic has: its ranking's (it is no probability: no log loss, no threshold)
RANK_METRICS = ("auc", "average_precision", "eer", "n", "n_pos")


@dataclass(frozen=True)
class ClipScores:
    video_id: str
    clip: int
    label: str  # REAL | FAKE
    scores: dict[str, float]  # STATISTICS name -> score (higher = more FAKE-like)


def score_clips(clips: Iterable[DecodedClip]) -> list[ClipScores]:
    """Every statistic of every clip."""
    return [
        ClipScores(c.meta.video_id, int(c.meta.clip), c.meta.label, {n: fn(c) for n, fn in STATISTICS.items()})
        for c in clips
    ]


def video_scores(rows: Iterable[ClipScores]) -> dict[str, dict[str, float]]:
    """Clip scores -> per video id, each statistic's mean over its clips (NaN clips skipped)."""
    by_video: dict[str, list[ClipScores]] = {}
    for r in rows:
        by_video.setdefault(r.video_id, []).append(r)
    return {
        vid: {n: float(np.nanmean([r.scores[n] for r in rs])) if any(np.isfinite(r.scores[n]) for r in rs)
              else float("nan") for n in rs[0].scores}
        for vid, rs in by_video.items()
    }  # fmt: skip


def statistic_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """RANK_METRICS of one statistic's scores ``score`` (N,) (higher = more FAKE-like) on labels ``y`` (N,),
    FAKE = 1, over the samples it is defined for (finite score; ``n`` counts them); NaN scores where those
    hold one class or none."""
    y, score = np.asarray(y, np.int64), np.asarray(score, np.float64)
    ok = np.isfinite(score)
    if not ok.any():
        return {"auc": float("nan"), "average_precision": float("nan"), "eer": float("nan"), "n": 0.0,
                "n_pos": 0.0}  # fmt: skip
    p = rankdata(score[ok]) / (ok.sum() + 1)  # (n,) in (0, 1), the same order (ties stay ties)
    m = binary_metrics(y[ok], p)
    return {k: m[k] for k in RANK_METRICS}


def baseline_metrics(video_ids: Sequence[str], y: np.ndarray, scores: Mapping[str, np.ndarray]
                     ) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """Each statistic as a baseline of one split: ``{"clip": {name: m}, "video": {name: m}}`` with ``m``
    of :func:`statistic_metrics`. ``video_ids``, ``y`` (N,) the clips' videos and labels (FAKE = 1),
    ``scores``: name -> (N,) clip scores; a video scores the mean of its clips (:func:`video_scores`)."""
    y = np.asarray(y, np.int64)
    rows = [ClipScores(v, i, FAKE if label else REAL, {n: float(s[i]) for n, s in scores.items()})
            for i, (v, label) in enumerate(zip(video_ids, y))]  # fmt: skip
    per_video = video_scores(rows)
    label = {r.video_id: int(r.label == FAKE) for r in rows}
    y_video = np.array([label[v] for v in per_video], np.int64)  # (V,)
    return {
        "clip": {n: statistic_metrics(y, s) for n, s in scores.items()},
        "video": {n: statistic_metrics(y_video, np.array([per_video[v][n] for v in per_video])) for n in scores},
    }
