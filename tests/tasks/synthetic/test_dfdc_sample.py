"""The synthetic DFDC sample: layout, codecs, detectable faces, lip sync, determinism, and
the absence of container/audio shortcuts (with a planted shortcut proving the audit bites)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from storage.manipulations import MANIPULATIONS
from tasks.synthetic.dfdc_sample import (
    IDENTITIES,
    METADATA,
    ShortcutControls,
    make_dfdc_sample,
    make_single_folder_sample,
    pool_faces,
    write_video,
)
from tasks.ingest.splits import read_identities
from tasks.synthetic.faces import POOLS, face_sources, photo_pool, pool_sources, source_name, source_pool

FPS, DURATION, SIZE, N_REAL = 25, 2.0, (256, 256), 8


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """8 reals x (1 + 6 manipulations) = 56 videos of 2 s in 2 parts."""
    out = tmp_path_factory.mktemp("dfdc")
    return make_dfdc_sample(out, n_real=N_REAL, parts=2, duration_s=DURATION, size=SIZE, fps=FPS)


@pytest.fixture(scope="module")
def videos(sample) -> list[tuple[Path, dict]]:
    """[(path, metadata entry)] over every part."""
    out = []
    for meta in sorted(sample.glob(f"dfdc_train_part_*/{METADATA}")):
        out += [(meta.parent / name, entry) for name, entry in sorted(json.loads(meta.read_text()).items())]
    return out


@pytest.fixture(scope="module")
def detectors():
    import mediapipe as mp

    fd = mp.solutions.face_detection
    full = fd.FaceDetection(model_selection=1, min_detection_confidence=0.5)
    short = fd.FaceDetection(model_selection=0, min_detection_confidence=0.5)
    yield full, short
    full.close()
    short.close()


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(frames (N, H, W, 3) uint8, mono audio (n,) float32, audio rate)."""
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].sample_rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio, rate


def _by_manipulation(videos, name: str | None) -> list[Path]:
    return [p for p, e in videos if e["manipulation"] == name]


# ----------------------------------------------------------------------------- layout


def test_metadata_is_dfdc_shaped_and_fakes_sit_beside_their_real(sample, videos):
    parts = sorted(p.name for p in sample.iterdir())
    assert parts == ["dfdc_train_part_0", "dfdc_train_part_1", IDENTITIES]
    assert len(videos) == N_REAL * (1 + len(MANIPULATIONS))
    for part in (p for p in sample.iterdir() if p.is_dir()):
        meta = json.loads((part / METADATA).read_text())
        assert sorted(meta) == sorted(p.name for p in part.glob("*.mp4"))  # every file listed, no extra
        for name, entry in meta.items():
            assert re.fullmatch(r"[a-z]{10}\.mp4", name)
            assert set(entry) == {"label", "split", "original", "manipulation"} and entry["split"] == "train"
            if entry["label"] == "REAL":
                assert entry["original"] is None and entry["manipulation"] is None
            else:
                assert entry["label"] == "FAKE" and entry["manipulation"] in MANIPULATIONS
                assert meta[entry["original"]]["label"] == "REAL"  # the original is in this same part
        reals = [n for n, e in meta.items() if e["label"] == "REAL"]
        for real in reals:  # one fake of each kind per real
            kinds = sorted(e["manipulation"] for e in meta.values() if e["original"] == real)
            assert kinds == sorted(MANIPULATIONS)
    assert len({p.name for p, _ in videos}) == len(videos)  # ids unique across parts


def test_single_folder_sample_is_flat(tmp_path):
    out = make_single_folder_sample(tmp_path, n_real=1, duration_s=0.4, size=(96, 96), manipulations=("audio_swap",))
    meta = json.loads((out / METADATA).read_text())
    assert [p.name for p in out.iterdir() if p.is_dir()] == []
    assert sorted(meta) == sorted(p.name for p in out.glob("*.mp4")) and len(meta) == 2
    with pytest.raises(TypeError):
        make_single_folder_sample(tmp_path, parts=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"manipulations": ("deepfake",)}, {"size": (255, 256)}, {"n_real": 2, "parts": 3}, {"n_real": 0}],
)
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_dfdc_sample(tmp_path, **kwargs)


def test_every_video_is_h264_yuv420p_with_mono_aac_of_the_right_length(videos):
    for path, _ in videos:
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert (v.codec_context.name, v.codec_context.pix_fmt) == ("h264", "yuv420p")
            assert (v.codec_context.height, v.codec_context.width) == SIZE
            assert v.average_rate == FPS and v.frames == DURATION * FPS
            assert a.codec_context.name == "aac" and a.channels == 1 and a.sample_rate == 44100
            assert float(a.duration * a.time_base) == pytest.approx(DURATION, abs=0.05)
            assert c.duration / 1e6 == pytest.approx(DURATION, abs=0.06)


# ----------------------------------------------------------------------------- faces and lips


def test_mediapipe_finds_the_face_in_real_and_fake_clips(videos, detectors):
    full, short = detectors
    visual = ("face_blend", "visual_artifact", "mouth_decorrelated")
    picked = _by_manipulation(videos, None)[:3] + [_by_manipulation(videos, m)[0] for m in visual]
    for path in picked:
        frames = _decode(path)[0][::5]
        found = crop_found = 0
        for f in frames:
            det = full.process(f).detections
            if not det:
                continue
            found += 1
            box = det[0].location_data.relative_bounding_box
            h, w = f.shape[:2]
            x0, y0 = max(0, int((box.xmin - 0.2 * box.width) * w)), max(0, int((box.ymin - 0.2 * box.height) * h))
            x1, y1 = int((box.xmin + 1.2 * box.width) * w), int((box.ymin + 1.2 * box.height) * h)
            crop_found += bool(short.process(np.ascontiguousarray(f[y0:y1, x0:x1])).detections)
        assert found / len(frames) >= 0.8, path.name
        assert crop_found / max(found, 1) >= 0.8, path.name


def _mouth_darkness(frames: np.ndarray, full) -> np.ndarray:
    """(N,) minus the mean brightness around mediapipe's mouth keypoint; NaN where no face."""
    out = np.full(len(frames), np.nan)
    h, w = frames.shape[1:3]
    for i, f in enumerate(frames):
        det = full.process(f).detections
        if det:
            bw = det[0].location_data.relative_bounding_box.width * w
            kp = det[0].location_data.relative_keypoints[3]  # MOUTH_CENTER
            mx, my = kp.x * w, kp.y * h
            dy, dx = 0.07 * bw, 0.12 * bw
            out[i] = -f[int(my - dy) : int(my + dy) + 1, int(mx - dx) : int(mx + dx) + 1].mean()
    return out


def _frame_rms(audio: np.ndarray, rate: int, n: int) -> np.ndarray:
    """(n,) audio RMS over +-1 frame around each frame time."""
    half = rate // FPS
    return np.array([np.sqrt(np.mean(audio[max(0, c - half) : c + half] ** 2)) for c in np.arange(n) * rate // FPS])


def _lag_correlations(mouth: np.ndarray, env: np.ndarray, max_lag: int = 15) -> dict[int, float]:
    """corr(mouth[i], env[i + lag]) over frames with a detection."""
    out = {}
    n = len(mouth)
    for lag in range(-max_lag, max_lag + 1):
        m, e = mouth[max(0, -lag) : n - max(0, lag)], env[max(0, lag) : n + min(0, lag)]
        ok = ~np.isnan(m)
        out[lag] = float(np.corrcoef(m[ok], e[ok])[0, 1])
    return out


def test_mouth_follows_the_audio_in_reals_and_lags_it_in_lipsync_fakes(videos, detectors):
    full, _ = detectors
    for kind in (None, "lipsync_offset", "mouth_decorrelated"):
        for path in _by_manipulation(videos, kind)[:3]:
            frames, audio, rate = _decode(path)
            corr = _lag_correlations(_mouth_darkness(frames, full), _frame_rms(audio, rate, len(frames)))
            best = max(corr, key=corr.get)
            if kind is None:
                assert corr[0] > 0.7 and abs(best) <= 1, (path.name, corr[0], best)
            elif kind == "lipsync_offset":  # shifted 100-500 ms = 2.5-12.5 frames
                assert 2 <= abs(best) <= 13 and corr[best] > 0.6 and corr[0] < corr[best] - 0.3, (path.name, best)
            else:
                assert abs(corr[0]) < 0.5, (path.name, corr[0])


def test_audio_swap_carries_another_reals_voice(videos):
    originals = {p.name: p for p in _by_manipulation(videos, None)}
    envelope = {name: _frame_rms(*_decode(p)[1:], 50) for name, p in originals.items()}
    for path, entry in [(p, e) for p, e in videos if e["manipulation"] == "audio_swap"]:
        _, audio, rate = _decode(path)
        env = _frame_rms(audio, rate, 50)
        corr = {name: np.corrcoef(env, e)[0, 1] for name, e in envelope.items()}
        best = max(corr, key=corr.get)
        assert best != entry["original"] and corr[best] > 0.9 and corr[entry["original"]] < corr[best] - 0.3


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_frames(tmp_path):
    kw = dict(n_real=2, parts=1, duration_s=0.6, size=(96, 128), manipulations=("lipsync_offset", "face_blend"), seed=7)
    a, b = make_dfdc_sample(tmp_path / "a", **kw), make_dfdc_sample(tmp_path / "b", **kw)
    part = "dfdc_train_part_0"
    meta = (a / part / METADATA).read_text()
    assert meta == (b / part / METADATA).read_text()
    for name in json.loads(meta):
        assert (a / part / name).read_bytes() == (b / part / name).read_bytes()
    first = sorted(json.loads(meta))[0]
    fa, aa, _ = _decode(a / part / first)
    fb, ab, _ = _decode(b / part / first)
    assert fa.shape == (15, 96, 128, 3) and np.array_equal(fa, fb) and np.array_equal(aa, ab)
    other = make_dfdc_sample(tmp_path / "c", **{**kw, "seed": 8})
    assert json.loads((other / part / METADATA).read_text()).keys().isdisjoint(json.loads(meta))


# ----------------------------------------------------------------------------- identity pools


def test_pools_partition_the_faces_and_morphs_mix_only_their_own_pool():
    photos = {p: set(pool_sources(p)[0]) for p in POOLS}
    morphs = {p: set(pool_sources(p)[1]) for p in POOLS}
    everything = [photos[p] | morphs[p] for p in POOLS]
    assert sum(map(len, everything)) == len(set().union(*everything)) == len(face_sources())  # a partition
    for p in POOLS:
        assert all(photo_pool(i) == p for i in photos[p]) and all(source_pool(m) == p for m in morphs[p])
    # every morph is the mean of two photos of its own pool
    imgs = face_sources()
    for p in POOLS:
        lfw = sorted(i for i in photos[p] if i > 0)
        for m in sorted(morphs[p])[:20]:
            assert any(np.allclose(imgs[m][0], (imgs[a][0] + imgs[b][0]) / 2) for a in lfw for b in lfw if a < b)


@pytest.mark.parametrize("seed", [0, 1, 7, 1000, 1007])
def test_training_pretraining_and_external_sets_share_no_face_whatever_the_seeds(seed):
    # the benchmark's sizes: 40 training identities, 300 stage-1 identities, 12 external ones
    used = {p: pool_faces(seed, n, p) for p, n in (("train", 40), ("pretrain", 300), ("external", 12))}
    for p, faces in used.items():
        assert {source_pool(f) for f in faces} == {p}
        assert len(set(faces)) == len(faces)  # no face repeats within a set of this size either
    assert not set(used["train"]) & set(pool_faces(seed + 7, 300, "pretrain"))
    assert not set(used["train"]) & set(pool_faces(seed + 1000, 12, "external"))


def _photos_of(face: int) -> set[int]:
    """The photos a face is made of: itself, or a morph's two parents."""
    name = source_name(face)
    return {int(x) for x in name.removeprefix("morph").split("+")} if name.startswith("morph") else {face}


@pytest.mark.parametrize("n_seeds", [2, 3])
def test_each_seeds_external_slice_has_faces_no_other_seed_uses(n_seeds):
    """The benchmark's external sets: seed i draws from slice (i, n_seeds) only, so seeds share no face,
    not even a morph's parent photo, and each has room for 16 identities without a repeat."""
    sets = [pool_faces(1000 + i, 16, "external", (i, n_seeds)) for i in range(n_seeds)]
    used = [set().union(*map(_photos_of, faces)) for faces in sets]
    for i, faces in enumerate(sets):
        assert len(set(faces)) == 16 and {source_pool(f) for f in faces} == {"external"}
        assert used[i] <= set(pool_sources("external", (i, n_seeds))[0])
    assert all(not used[i] & used[j] for i in range(n_seeds) for j in range(i + 1, n_seeds))
    slices = [pool_sources("external", (i, n_seeds)) for i in range(n_seeds)]
    assert sorted(p for photos, _ in slices for p in photos) == sorted(pool_sources("external")[0])  # a partition
    assert pool_sources("external", (0, 1)) == pool_sources("external")
    with pytest.raises(ValueError, match="pool_slice"):
        pool_sources("external", (3, 3))


def test_a_sliced_sample_draws_its_faces_from_its_slice(tmp_path):
    kw = dict(n_real=2, parts=0, duration_s=1.0, size=(96, 96), manipulations=("face_blend",), seed=3, pool="external")
    names = {i: set(read_identities(str(make_dfdc_sample(tmp_path / str(i), pool_slice=(i, 2), **kw) / IDENTITIES))
                    .values()) for i in range(2)}  # fmt: skip
    allowed = {i: {source_name(f) for f in sum(pool_sources("external", (i, 2)), ())} for i in range(2)}
    assert all(names[i] and names[i] <= allowed[i] for i in range(2)) and not names[0] & names[1]


def test_generated_pools_have_disjoint_faces_and_voices(tmp_path):
    kw = dict(n_real=2, parts=0, duration_s=1.0, size=(96, 96), manipulations=("audio_swap", "face_blend"), seed=3)
    made = {p: make_dfdc_sample(tmp_path / p, pool=p, **kw) for p in POOLS}
    names = {p: set(read_identities(str(made[p] / IDENTITIES)).values()) for p in POOLS}
    assert all(len(names[p]) == 2 for p in POOLS)
    assert not (names["train"] & names["pretrain"] or names["train"] & names["external"]
                or names["pretrain"] & names["external"])  # fmt: skip
    ids = {p: read_identities(str(made[p] / IDENTITIES)) for p in POOLS}
    meta = {p: json.loads((made[p] / METADATA).read_text()) for p in POOLS}
    for p in POOLS:  # every video listed, a fake under its original's face
        assert set(ids[p]) == {n.removesuffix(".mp4") for n in meta[p]}
        for name, e in meta[p].items():
            if e["original"]:
                assert ids[p][name.removesuffix(".mp4")] == ids[p][e["original"].removesuffix(".mp4")]
    voices = {}
    for p in POOLS:
        reals = sorted(n for n, e in meta[p].items() if e["label"] == "REAL")
        voices[p] = [_decode(made[p] / n)[1] for n in reals]
    for a, b in (("train", "pretrain"), ("train", "external"), ("pretrain", "external")):
        for va in voices[a]:
            for vb in voices[b]:
                n = min(len(va), len(vb))
                assert abs(np.corrcoef(va[:n], vb[:n])[0, 1]) < 0.3, (a, b)  # different voices, not one reused
    with pytest.raises(ValueError, match="pool"):
        make_dfdc_sample(tmp_path / "x", pool="holdout", **kw)


# ----------------------------------------------------------------------------- shortcuts


def _container_stats(path: Path) -> list[float]:
    """File size, duration, leading silence, RMS loudness, bitrate: no pixels, no content."""
    with av.open(str(path)) as c:
        duration, bitrate, rate = c.duration / 1e6, c.bit_rate, c.streams.audio[0].sample_rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]).astype(np.float64)
    win = rate // 100
    rms = np.sqrt((audio[: len(audio) // win * win].reshape(-1, win) ** 2).mean(1))  # 10 ms frames
    loud = np.flatnonzero(rms > 10 ** (-50 / 20))
    lead = (loud[0] if len(loud) else len(rms)) / 100
    return [path.stat().st_size, duration, lead, 20 * np.log10(np.sqrt(np.mean(audio**2))), bitrate]


def _shortcut_auc(videos: list[tuple[Path, dict]]) -> float:
    """Cross-validated ROC-AUC of a logistic regression on container/audio statistics alone."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.array([_container_stats(p) for p, _ in videos])
    y = np.array([e["label"] == "FAKE" for _, e in videos])
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return roc_auc_score(y, cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1])


def test_container_and_audio_statistics_do_not_reveal_the_label(videos):
    assert len(videos) >= 40
    assert _shortcut_auc(videos) < 0.7


def test_the_shortcut_audit_catches_a_planted_shortcut(tmp_path):
    """Same audit, a sample whose fakes alone get 0.6 s more leading silence: it must fire."""
    broken = make_dfdc_sample(
        tmp_path,
        n_real=8,
        duration_s=1.5,
        size=(128, 128),
        seed=3,
        manipulations=("lipsync_offset", "audio_swap", "face_blend", "visual_artifact"),
        controls=ShortcutControls(planted_fake_lead_s=0.6),
    )
    meta = json.loads((broken / "dfdc_train_part_0" / METADATA).read_text())
    videos = [(broken / "dfdc_train_part_0" / n, e) for n, e in sorted(meta.items())]
    assert len(videos) == 40
    assert _shortcut_auc(videos) > 0.9


# ----------------------------------------------------------------------------- write_video


@pytest.mark.parametrize(
    ("suffix", "codec", "decoded_as", "rotation", "with_audio"),
    [
        (".mp4", "libx264", "h264", 90, True),
        (".mp4", "libx264", "h264", 0, False),
        (".mkv", "libx265", "hevc", 270, True),
        (".avi", "mjpeg", "mjpeg", 0, False),
    ],
)
def test_write_video_round_trips(tmp_path, suffix, codec, decoded_as, rotation, with_audio):
    yy, xx = np.mgrid[0:48, 0:64]
    frames = np.stack([np.stack([xx * 4, yy * 5, np.full_like(xx, 20 * i)], -1) for i in range(6)]).astype(np.uint8)
    audio = (0.3 * np.sin(np.arange(8000) * 0.05)).astype(np.float32) if with_audio else None
    path = write_video(tmp_path / f"v{suffix}", frames, 12, audio, 16000, codec=codec, rotation_deg=rotation, crf=18)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == decoded_as
        assert len(c.streams.audio) == int(with_audio)
        decoded = [f for f in c.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].rotation % 360 == rotation  # 270 reads back as -90
    pixels = np.stack([f.to_ndarray(format="rgb24") for f in decoded]).astype(int)
    assert pixels.shape == frames.shape and np.abs(pixels - frames).mean() < 6


def test_write_video_refuses_bad_frames(tmp_path):
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.mp4", np.zeros((2, 31, 32, 3), np.uint8), 25)
    with pytest.raises(ValueError):
        write_video(tmp_path / "b.mp4", np.zeros((2, 32, 32, 3), np.float32), 25)
    with pytest.raises(ValueError):
        write_video(tmp_path / "c.mp4", np.zeros((0, 32, 32, 3), np.uint8), 25)


def test_the_demo_sample_shows_a_missing_and_an_unlisted_video_to_ingest_and_evaluate(tmp_path):
    """The demo's sample: the real scan (what ingest quarantines, what evaluate scores unlabelled) refuses
    exactly the two planted files, each with its reason and file name; everything else is kept."""
    from tasks.ingest.scan import scan_dfdc
    from tasks.synthetic.dfdc_sample import MISSING_VIDEO, UNLISTED_VIDEO, add_refusals

    root = make_dfdc_sample(tmp_path / "s", n_real=1, duration_s=1.0, size=(64, 64), manipulations=("lipsync_offset",))
    before = scan_dfdc(str(root))
    assert not before.rejected and len(before.entries) == 2
    planted = add_refusals(root)
    assert add_refusals(root) == planted  # idempotent: a second call plants nothing more
    assert planted == {
        "missing": f"dfdc_train_part_0/{MISSING_VIDEO}",
        "unlisted": f"dfdc_train_part_0/{UNLISTED_VIDEO}",
    }
    scan = scan_dfdc(str(root))
    refused = {r.rel_path: (r.reason, r.error) for r in scan.rejected}
    assert set(refused) == set(planted.values())
    assert refused[planted["missing"]][0] == "missing_file" and MISSING_VIDEO in refused[planted["missing"]][1]
    assert refused[planted["unlisted"]][0] == "missing_metadata" and UNLISTED_VIDEO in refused[planted["unlisted"]][1]
    assert [e.video_id for e in scan.entries] == [e.video_id for e in before.entries]
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        add_refusals(tmp_path / "empty")
