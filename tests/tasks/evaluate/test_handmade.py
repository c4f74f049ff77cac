import numpy as np
import pytest

from avff_model.inputs import mel_band
from avff_model.signals import SYNC_BAND_HZ
from storage.shard_schema import ClipMeta, DecodedClip
from tasks.evaluate import handmade as H

T, SIZE, FPS, HOP = 16, 64, 5.0, 0.01


def _talking(loud: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """frames (T, H, W, 3) whose mouth box darkens with ``loud`` (T,), and a log-mel (F, Tm) as loud."""
    frames = np.full((T, SIZE, SIZE, 3), 180, np.uint8)
    top, bottom, left, right = (int(SIZE * f) for f in H.MOUTH_BOX)
    for t, v in enumerate(loud):
        frames[t, top:bottom, left:right] = int(180 - 100 * v)
    cols = np.arange(320) * HOP * FPS  # each mel column's position in frames
    mel = np.log(np.interp(cols, np.arange(T), loud) + 0.05)[None].repeat(8, 0) + 0.01 * rng.normal(size=(8, 320))
    return frames, mel


def test_sync_correlation_is_high_in_sync_and_low_when_the_audio_is_another_clips():
    rng = np.random.default_rng(0)
    loud = rng.random(T)
    frames, mel = _talking(loud, rng)
    assert H.sync_correlation(frames, mel, FPS, HOP) > 0.9
    _, other = _talking(rng.random(T), rng)
    assert abs(H.sync_correlation(frames, other, FPS, HOP)) < 0.6
    still = np.full_like(frames, 120)
    assert np.isnan(H.sync_correlation(still, mel, FPS, HOP))  # a frozen mouth has no correlation


def test_laplacian_variance_falls_when_the_face_is_blurred():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (T, SIZE, SIZE, 3)).astype(np.uint8)
    blurred = (sharp.astype(float) + np.roll(sharp, 1, 1) + np.roll(sharp, 1, 2) + np.roll(sharp, (1, 1), (1, 2))) / 4
    assert H.laplacian_variance(blurred.astype(np.uint8)) < 0.5 * H.laplacian_variance(sharp)
    edges_only = sharp.copy()
    edges_only[:, 16:48, 16:48] = 128  # flat face centre, busy border: the centre box ignores the border
    assert H.laplacian_variance(edges_only) < 0.1 * H.laplacian_variance(sharp)


def test_scores_are_oriented_fake_high_and_average_per_video():
    rng = np.random.default_rng(1)
    loud = rng.random(T)
    frames, mel = _talking(loud, rng)
    _, other = _talking(rng.random(T), rng)

    def clip(vid: str, i: int, mel_: np.ndarray, label: str) -> DecodedClip:
        meta = ClipMeta(video_id=vid, clip=i, label=label, split="test", group="real", original=None, start_s=0.0,
                        fps=FPS, num_frames=T, face_box=[0, 0, SIZE, SIZE], det_score=1.0, detected_frac=1.0,
                        mel_hop_s=HOP)  # fmt: skip
        return DecodedClip(key=f"{vid}/{i:03d}", frames=frames, mel=mel_, meta=meta)

    rows = H.score_clips([clip("real", 0, mel, "REAL"), clip("fake", 0, other, "FAKE"), clip("fake", 1, mel, "FAKE")])
    assert [r.label for r in rows] == ["REAL", "FAKE", "FAKE"] and set(rows[0].scores) == set(H.STATISTICS)
    assert rows[1].scores["lip_sync"] > rows[0].scores["lip_sync"]
    per_video = H.video_scores(rows)
    assert per_video["fake"]["lip_sync"] == pytest.approx((rows[1].scores["lip_sync"] + rows[2].scores["lip_sync"]) / 2)


def test_lip_sync_reads_the_clips_stored_mouth_box_and_the_template_box_without_one():
    """A mouth drawn away from the template (a tilted or off-centre face): the statistic finds it
    through the clip's stored box (crop pixels), and misses it with the template's."""
    rng = np.random.default_rng(2)
    loud = rng.random(T)
    frames = np.full((T, SIZE, SIZE, 3), 180, np.uint8)
    for t, v in enumerate(loud):
        frames[t, 4:14, 4:24] = int(180 - 100 * v)  # the mouth, top left, outside MOUTH_BOX
    _, mel = _talking(loud, rng)
    assert H.sync_correlation(frames, mel, FPS, HOP, mouth_box=[4.0, 4.0, 24.0, 14.0]) > 0.9
    assert np.isnan(H.sync_correlation(frames, mel, FPS, HOP))  # the template box sees a still, flat patch
    meta = ClipMeta(video_id="v", clip=0, label="REAL", split="test", group="v", original=None, start_s=0.0, fps=FPS,
                    num_frames=T, face_box=[0, 0, 1, 1], det_score=1.0, detected_frac=1.0, mel_hop_s=HOP,
                    crop="landmarks", mouth_box=[4.0, 4.0, 24.0, 14.0])  # fmt: skip
    (row,) = H.score_clips([DecodedClip("v/000", frames, mel.astype(np.float16), meta)])
    assert row.scores["lip_sync"] < -0.9


def test_lip_sync_reads_the_landmarks_lips_where_the_clip_has_them():
    """Still pixels, lips that part (and narrow) with the sound: the darkness sees nothing, the
    landmarks' opening correlates; the same lips against another clip's sound do not."""
    rng = np.random.default_rng(3)
    loud = rng.random(T)
    _, mel = _talking(loud, rng)
    still = np.full((T, SIZE, SIZE, 3), 150, np.uint8)
    lips = [[0.05 + 0.2 * v, 1.2 - 0.1 * v] for v in loud]  # (T, 2) opening up, width down when loud
    assert np.isnan(H.sync_correlation(still, mel, FPS, HOP)), "no pixel moves"
    assert H.sync_correlation(still, mel, FPS, HOP, lip_shape=lips) > 0.9
    _, other = _talking(rng.random(T), rng)
    assert abs(H.sync_correlation(still, other, FPS, HOP, lip_shape=lips)) < 0.6
    meta = ClipMeta(video_id="v", clip=0, label="REAL", split="test", group="v", original=None, start_s=0.0, fps=FPS,
                    num_frames=T, face_box=[0, 0, 1, 1], det_score=1.0, detected_frac=1.0, mel_hop_s=HOP,
                    crop="landmarks", mouth_box=[4.0, 4.0, 24.0, 14.0], lip_shape=lips)  # fmt: skip
    (row,) = H.score_clips([DecodedClip("v/000", still, mel.astype(np.float16), meta)])
    assert row.scores["lip_sync"] < -0.9


def test_a_statistic_is_scored_by_its_ranking_over_the_clips_it_defines():
    y = np.array([0, 0, 1, 1, 0, 1])
    # sharpness-like magnitudes (a sigmoid would saturate them into ties); one undefined clip
    score = np.array([-5000.0, -4000.0, -10.0, -20.0, -3000.0, np.nan])
    m = H.statistic_metrics(y, score)
    assert set(m) == set(H.RANK_METRICS) and m["auc"] == 1.0 and m["eer"] == 0.0
    assert (m["n"], m["n_pos"]) == (5, 2)  # the NaN clip is left out, and counted out
    assert H.statistic_metrics(y, -score)["auc"] == 0.0  # oriented: higher = more FAKE-like
    assert H.statistic_metrics(y, np.r_[score[:5] * 0, np.nan])["auc"] == 0.5  # a constant ranks nothing
    assert np.isnan(H.statistic_metrics(np.ones(3, int), [1.0, 2.0, 3.0])["auc"])  # one class: undefined
    none = H.statistic_metrics(y, np.full(6, np.nan))
    assert np.isnan(none["auc"]) and none["n"] == 0


def test_baseline_metrics_score_clips_and_videos_as_video_scores_averages_them():
    ids = ["a", "a", "b", "b", "c", "d"]
    y = np.array([0, 0, 1, 1, 0, 1])
    lip = np.array([0.1, 0.9, 0.2, 0.6, 0.3, np.nan])  # video means: a 0.5, b 0.4, c 0.3, d undefined
    sharp = np.array([-3.0, -3.0, -1.0, -1.0, -2.0, -0.5])
    out = H.baseline_metrics(ids, y, {"lip_sync": lip, "sharpness": sharp})
    assert out["clip"]["lip_sync"] == H.statistic_metrics(y, lip)
    assert out["video"]["lip_sync"]["auc"] == 0.5 and out["video"]["lip_sync"]["n"] == 3  # b beats c, not a
    assert out["video"]["sharpness"]["auc"] == 1.0 and out["video"]["sharpness"]["n"] == 4


def _smooth_motion(rng: np.random.Generator, k: int) -> np.ndarray:
    """(k,) a mouth opening that moves like speech at 25 fps: noise smoothed over ~0.1 s."""
    return np.convolve(rng.normal(size=k + 4), np.ones(5) / 5, mode="valid")


@pytest.mark.parametrize("seed", range(5))
def test_sync_peak_says_where_the_sound_sits_and_the_models_twin_agrees(seed):
    """Own sound peaks at lag 0 (> 0); the same sound moved 0.6 s or 0.8 s peaks far (< 0); the sync
    branch's :func:`avff_model.signals.sync_peak` (the learned model's feature) gives the same signs."""
    import torch

    from avff_model.signals import sync_peak as model_peak

    rng = np.random.default_rng(seed)
    k = 80
    opening = _smooth_motion(rng, k + 40)
    lips = np.stack([opening[20 : 20 + k], 1.0 - 0.2 * opening[20 : 20 + k]], 1)  # (K, 2): narrower when open
    sound = {s: opening[20 - s : 20 - s + k] + 0.3 * rng.normal(size=k) for s in (0, 15, -20)}  # moved s steps

    def ours(loud):  # the hand-made statistic on the opening it reads (gap minus width, standardised)
        return H.sync_peak(H.lip_opening(lips.tolist()), loud)

    def model(loud):
        return float(model_peak(torch.tensor(lips[None]), torch.tensor(loud[None, :, None]))[0, 3])

    assert ours(sound[0]) > 0.2 and model(sound[0]) > 0.2
    for s in (15, -20):
        assert ours(sound[s]) < 0 and model(sound[s]) < 0, f"a sound moved {s / 25:.1f} s peaks away from lag 0"


def test_lip_sync_scores_a_clip_with_a_lip_track_by_its_sync_peak():
    """A clip with a 25 fps lip track: its own sound (speech-band energy following the opening) scores
    REAL-like, the same sound moved 0.6 s FAKE-like; the pixels (still here) are not read."""
    rng = np.random.default_rng(7)
    k, cols = 80, 320  # 3.2 s: 80 steps at 25 fps, 320 mel columns at 10 ms
    opening = _smooth_motion(rng, k + 30)
    band = mel_band(128, *SYNC_BAND_HZ)

    def mel_of(motion):  # (128, 320) log-mel: the speech band's energy follows ``motion``
        energy = np.exp(2 * np.interp(np.arange(cols) / 4, np.arange(len(motion)), motion))
        mel = np.log(0.01 + 0.1 * rng.random((128, cols)))
        mel[band] = np.log(energy + 0.01 * rng.random((band.sum(), cols)))
        return mel.astype(np.float16)

    lips = [[0.05 + 0.05 * v, 1.0] for v in opening[:k]]
    meta = ClipMeta(video_id="v", clip=0, label="REAL", split="test", group="v", original=None, start_s=0.0, fps=FPS,
                    num_frames=T, face_box=[0, 0, 1, 1], det_score=1.0, detected_frac=1.0, mel_hop_s=HOP,
                    crop="landmarks", lip_track=lips)  # fmt: skip
    still = np.full((T, SIZE, SIZE, 3), 150, np.uint8)
    own = H.lip_sync(DecodedClip("v/000", still, mel_of(opening[:k]), meta))
    moved = H.lip_sync(DecodedClip("v/000", still, mel_of(opening[15 : 15 + k]), meta))
    assert own < -0.2 < 0 < moved
