"""Synthetic DFDC-format sample: talking-face videos with known manipulations.

A real clip animates a face photo (the scikit-image astronaut or an upscaled LFW face)
over a textured background: smooth head drift, blinks, and a dark mouth ellipse whose
height follows the amplitude envelope of a synthetic speech track (:mod:`tasks.synthetic.speech`).
Each real gets one fake per requested manipulation (:data:`storage.manipulations.MANIPULATIONS`), written beside
it in the same part, as DFDC does.

Identity pools: ``pool`` (``train``, ``pretrain`` or ``external``, :data:`tasks.synthetic.faces.POOLS`)
picks the face photos (and synthetic morphs of them) from that pool only, and keys every random
stream, voices included, by the pool, so a training set, a stage-1 set and an external test set
share no face and no voice whatever their seeds (``tests/tasks/synthetic/test_dfdc_sample.py`` checks it).
Each real uses a different face while the pool has photos left, then morphs, and only then
repeats faces. ``identities.csv`` (``video,identity``: the face's name) is written beside the data;
``avff ingest --identities`` takes it.

Shortcut control: leading silence, loudness, noise floor and encoder quality are drawn per
video from ONE distribution, whatever the label, so that container/audio statistics alone
cannot tell REAL from FAKE (``tests/tasks/synthetic/test_dfdc_sample.py`` checks it). Fakes that keep
the original's audio keep its leading silence, exactly like an edited DFDC video.

Layout (``parts >= 1``)::

    out_dir/dfdc_train_part_0/{abcdefghij.mp4, ..., metadata.json}

``parts == 0`` writes the flat layout of DFDC's ``train_sample_videos/``.
Array letters: N frames, H, W, C channels; audio is mono ``(n,)`` float32 in [-1, 1].
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from storage.manipulations import MANIPULATIONS
from storage.shard_schema import FAKE, REAL
from tasks.media.video_writer import write_video  # the one writer; imported from here by many tests
from tasks.synthetic.faces import (
    POOLS,
    Look,
    Scene,
    blend_face,
    degrade_face,
    draw_look,
    draw_scene,
    face_sprite,
    pool_sources,
    render,
    source_name,
)
from tasks.synthetic.speech import SpeechPlan, frame_envelope, render_speech, speech_plan

PART_DIR = "dfdc_train_part_{}"
METADATA = "metadata.json"
IDENTITIES = "identities.csv"
# extra random-stream key per pool; "train" has none, so its streams are those of earlier versions
_POOL_KEYS = {"train": (), "pretrain": (1 << 28,), "external": ((1 << 28) + 1,)}
_PAD_S = 0.6  # speech rendered beyond the clip on both sides, so shifted windows exist


@dataclass(frozen=True)
class ShortcutControls:
    """Per-video nuisance distributions, shared by REAL and FAKE.

    ``planted_fake_lead_s`` adds leading silence to fakes only: a deliberate shortcut that
    exists so a shortcut audit can be shown to fail. Keep it 0 for real use.
    """

    lead_silence_s: tuple[float, float] = (0.0, 0.3)
    loudness_dbfs: tuple[float, float] = (-30.0, -18.0)  # RMS of the whole track
    noise_floor_dbfs: tuple[float, float] = (-72.0, -62.0)
    crf: tuple[int, int] = (20, 28)  # libx264 quality, inclusive range
    planted_fake_lead_s: float = 0.0


# --------------------------------------------------------------------------- audio helpers


@dataclass(frozen=True)
class _Speaker:
    """A real clip's voice: clean speech over [-_PAD_S, duration + _PAD_S] and its lead."""

    plan: SpeechPlan
    stream: np.ndarray  # (n_stream,) float32
    lead_s: float


def _speaker(rng: np.random.Generator, duration_s: float, rate: int, lead_range: tuple[float, float]) -> _Speaker:
    plan = speech_plan(rng, duration_s + 2 * _PAD_S)
    return _Speaker(plan, render_speech(plan, rate), rng.uniform(*lead_range))


def _clip_audio(stream: np.ndarray, lead_s: float, rate: int, duration_s: float, shift_s: float = 0.0) -> np.ndarray:
    """The clip's clean audio (n,): a window of ``stream`` (``shift_s > 0`` delays it against
    the video) whose first ``lead_s`` seconds are silenced, with a 20 ms fade-in."""
    start = int(round((_PAD_S - shift_s) * rate))
    return _silence(stream[start : start + int(round(duration_s * rate))].copy(), lead_s, rate)


def _silence(x: np.ndarray, lead_s: float, rate: int) -> np.ndarray:
    """Zero the first ``lead_s`` seconds of ``x`` in place and fade in over 20 ms."""
    n = min(len(x), int(round(lead_s * rate)))
    fade = min(int(0.02 * rate), len(x) - n)
    x[:n] = 0.0
    x[n : n + fade] *= np.linspace(0.0, 1.0, fade, dtype=x.dtype)
    return x


def _mouth(audio: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Mouth opening (N,) in [0, 1]: the frame envelope over its 95th percentile."""
    env = frame_envelope(audio, rate, fps, n_frames)
    return np.clip(env / max(float(np.percentile(env, 95)), 1e-9), 0.0, 1.0)


def _finish(x: np.ndarray, rng: np.random.Generator, controls: ShortcutControls) -> np.ndarray:
    """Per-video loudness and noise floor, drawn the same way for every label."""
    rms = max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-9)
    x = x * (10 ** (rng.uniform(*controls.loudness_dbfs) / 20) / rms)
    x = x + rng.standard_normal(len(x)) * 10 ** (rng.uniform(*controls.noise_floor_dbfs) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- manipulations


@dataclass(frozen=True)
class _Original:
    """What a manipulation may reuse of its real clip, and the sample it belongs to."""

    look: Look
    scene: Scene
    speaker: _Speaker
    audio: np.ndarray  # (n,) clean clip audio
    mouth: np.ndarray  # (N,)
    frames: np.ndarray  # (N, H, W, 3) uint8
    others: list[_Speaker]  # the other reals' voices
    donors: tuple[int, ...]  # faces of the same pool a face swap may paste in
    duration_s: float
    fps: float
    rate: int
    lead_range: tuple[float, float]


_Manipulation = Callable[[np.random.Generator, _Original], tuple[np.ndarray, np.ndarray]]
_REGISTRY: dict[str, _Manipulation] = {}


def _manipulation(fn: _Manipulation) -> _Manipulation:
    """Register ``fn`` under its name without the underscore: (frames, clean audio) of a fake."""
    _REGISTRY[fn.__name__.lstrip("_")] = fn
    return fn


@_manipulation
def _lipsync_offset(rng: np.random.Generator, o: _Original) -> tuple[np.ndarray, np.ndarray]:
    shift = rng.uniform(0.1, 0.5) * rng.choice([-1.0, 1.0])
    # A fresh lead from the same distribution: a shifted track must not start later on average.
    return o.frames, _clip_audio(o.speaker.stream, rng.uniform(*o.lead_range), o.rate, o.duration_s, shift)


@_manipulation
def _audio_swap(rng: np.random.Generator, o: _Original) -> tuple[np.ndarray, np.ndarray]:
    other = o.others[rng.integers(len(o.others))] if o.others else _speaker(rng, o.duration_s, o.rate, o.lead_range)
    return o.frames, _clip_audio(other.stream, other.lead_s, o.rate, o.duration_s)


@_manipulation
def _mouth_decorrelated(rng: np.random.Generator, o: _Original) -> tuple[np.ndarray, np.ndarray]:
    voice = _speaker(rng, o.duration_s, o.rate, o.lead_range)
    unrelated = _clip_audio(voice.stream, voice.lead_s, o.rate, o.duration_s)
    return render(o.scene, _mouth(unrelated, o.rate, o.fps, len(o.frames))), o.audio


@_manipulation
def _face_blend(rng: np.random.Generator, o: _Original) -> tuple[np.ndarray, np.ndarray]:
    donors = [d for d in o.donors if d != o.look.source]
    donor_source = donors[rng.integers(len(donors))]
    # The donor keeps the target's tint, as face-swap pipelines colour-correct; a residual
    # per-channel gain leaves the mismatch a detector can find at the seam.
    donor = face_sprite(replace(o.look, source=int(donor_source)), o.scene.face_px)
    gain = 1.0 + rng.uniform(-0.15, 0.15, 3).astype(np.float32)
    return render(o.scene, o.mouth, blend_face(o.scene.sprite, donor, o.scene.face_px, gain)), o.audio


@_manipulation
def _visual_artifact(rng: np.random.Generator, o: _Original) -> tuple[np.ndarray, np.ndarray]:
    return degrade_face(o.frames, o.scene, rng), o.audio


@_manipulation
def _audio_pitch(rng: np.random.Generator, o: _Original) -> tuple[np.ndarray, np.ndarray]:
    up = rng.random() < 0.5
    f0_factor = rng.uniform(1.35, 1.6) ** (1 if up else -1)
    formant_factor = rng.uniform(1.1, 1.2) ** (1 if up else -1)
    change_at = _PAD_S + rng.uniform(0.35, 0.65) * o.duration_s
    stream = render_speech(
        o.speaker.plan, o.rate, change_at_s=change_at, f0_factor=f0_factor, formant_factor=formant_factor
    )
    return o.frames, _clip_audio(stream, o.speaker.lead_s, o.rate, o.duration_s)


if tuple(_REGISTRY) != MANIPULATIONS:  # the order keys the random streams: append only
    raise RuntimeError(f"registered {tuple(_REGISTRY)} != MANIPULATIONS {MANIPULATIONS}")


# --------------------------------------------------------------------------- the sample


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (real, purpose): a subset of manipulations changes nothing else."""
    return np.random.default_rng([seed, *key])


def _keys(pool: str, pool_slice: tuple[int, int] | None) -> tuple[int, ...]:
    """The random-stream key of a pool (and slice): no two of them share a voice, whatever the seed."""
    if pool_slice is None:
        return _POOL_KEYS[pool]
    return (*_POOL_KEYS[pool], (1 << 27) + (pool_slice[1] << 10) + pool_slice[0])


def _video_ids(seed: int, n_real: int, pool: str = "train", pool_slice: tuple[int, int] | None = None) -> np.ndarray:
    """(n_real, 1 + len(MANIPULATIONS)) unique 10-letter ids, column 0 the real."""
    rng, letters = _rng(seed, *_keys(pool, pool_slice), 1 << 30), np.array(list(string.ascii_lowercase))
    ids: dict[str, None] = {}
    while len(ids) < n_real * (1 + len(MANIPULATIONS)):
        ids["".join(rng.choice(letters, 10))] = None
    return np.array(list(ids)).reshape(n_real, 1 + len(MANIPULATIONS))


def pool_faces(seed: int, n_real: int, pool: str = "train", pool_slice: tuple[int, int] | None = None) -> list[int]:
    """The face source of each of ``n_real`` reals: the pool's (slice's) photos in a seeded order, then
    its morphs, then repeats. Only ever sources of ``pool`` (and ``pool_slice``), whatever the seed."""
    photos, morphs = pool_sources(pool, pool_slice)
    order = _rng(seed, *_keys(pool, pool_slice), 1 << 29)
    faces = [photos[i] for i in order.permutation(len(photos))] + [morphs[i] for i in order.permutation(len(morphs))]
    return [int(faces[k % len(faces)]) for k in range(n_real)]


def _write(
    path: Path,
    frames: np.ndarray,
    audio: np.ndarray,
    rng: np.random.Generator,
    fps: float,
    rate: int,
    controls: ShortcutControls,
) -> None:
    crf = int(rng.integers(controls.crf[0], controls.crf[1] + 1))
    write_video(path, frames, fps, _finish(audio, rng, controls), rate, crf=crf)


def make_dfdc_sample(
    out_dir: str | Path,
    *,
    n_real: int = 8,
    parts: int = 1,
    duration_s: float = 4.0,
    size: tuple[int, int] = (256, 256),
    fps: float = 25,
    seed: int = 0,
    manipulations: Sequence[str] = MANIPULATIONS,
    audio_rate: int = 44100,
    controls: ShortcutControls = ShortcutControls(),
    pool: str = "train",
    pool_slice: tuple[int, int] | None = None,
) -> Path:
    """Write ``n_real`` real clips and one fake per manipulation each; return ``out_dir``.

    ``size`` is (H, W), even. Reals go round-robin into ``parts`` folders
    ``dfdc_train_part_{i}`` (fakes beside their original), each with a ``metadata.json``;
    ``parts=0`` writes everything, metadata included, straight into ``out_dir``.
    ``manipulations`` picks the fakes (any subset of :data:`MANIPULATIONS`); ``controls`` sets
    the label-independent nuisance distributions. Same arguments, same bytes: every draw comes
    from ``seed``, keyed by (real, purpose), so a subset of manipulations leaves the rest unchanged.
    ``pool`` (module docstring) keeps faces and voices apart from the other pools'; ``pool_slice=(i, n)``
    draws faces (face-swap donors included) and voices from the i-th of n disjoint slices of it only
    (:func:`tasks.synthetic.faces.pool_sources`): n evaluation sets that share no identity.
    Files already in ``out_dir`` are overwritten or left alone, never listed.
    """
    unknown = sorted(set(manipulations) - set(MANIPULATIONS))
    if unknown:
        raise ValueError(f"unknown manipulations {unknown}; known: {MANIPULATIONS}")
    if n_real < 1 or not 0 <= parts <= n_real:
        raise ValueError(f"need n_real >= 1 and 0 <= parts <= n_real, got {n_real=} {parts=}")
    if size[0] % 2 or size[1] % 2 or min(size) < 64:
        raise ValueError(f"size (H, W) must be even and at least 64 pixels, got {size}")
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {POOLS}")
    out_dir = Path(out_dir)
    n_frames = int(round(duration_s * fps))
    ids = _video_ids(seed, n_real, pool, pool_slice)
    faces, donors = pool_faces(seed, n_real, pool, pool_slice), pool_sources(pool, pool_slice)[0]
    rng_of = lambda *key: _rng(seed, *_keys(pool, pool_slice), *key)  # noqa: E731  (every stream keyed by the pool)
    voices = [_speaker(rng_of(k, 1), duration_s, audio_rate, controls.lead_silence_s) for k in range(n_real)]
    metadata: dict[Path, dict[str, dict]] = {}
    identities = ["video,identity"]
    for k, voice in enumerate(voices):
        folder = out_dir / PART_DIR.format(k % parts) if parts else out_dir
        folder.mkdir(parents=True, exist_ok=True)
        meta = metadata.setdefault(folder, {})
        look = draw_look(rng_of(k, 0), faces[k])
        scene = draw_scene(rng_of(k, 3), look, size, n_frames, fps)
        audio = _clip_audio(voice.stream, voice.lead_s, audio_rate, duration_s)
        mouth = _mouth(audio, audio_rate, fps, n_frames)
        frames = render(scene, mouth)
        real = f"{ids[k, 0]}.mp4"
        _write(folder / real, frames, audio, rng_of(k, 2), fps, audio_rate, controls)
        meta[real] = {"label": REAL, "split": "train", "original": None, "manipulation": None}
        identities.append(f"{real},{source_name(faces[k])}")
        original = _Original(
            look,
            scene,
            voice,
            audio,
            mouth,
            frames,
            voices[:k] + voices[k + 1 :],
            donors,
            duration_s,
            fps,
            audio_rate,
            controls.lead_silence_s,
        )
        for name in dict.fromkeys(manipulations):
            m = MANIPULATIONS.index(name)
            rng = rng_of(k, 10 + m)
            fake_frames, fake_audio = _REGISTRY[name](rng, original)
            if controls.planted_fake_lead_s > 0:  # on top of the zeros the fake already starts with
                lead = np.flatnonzero(fake_audio)[:1].sum() / audio_rate + controls.planted_fake_lead_s
                fake_audio = _silence(fake_audio.copy(), lead, audio_rate)
            fake = f"{ids[k, 1 + m]}.mp4"
            _write(folder / fake, fake_frames, fake_audio, rng, fps, audio_rate, controls)
            meta[fake] = {"label": FAKE, "split": "train", "original": real, "manipulation": name}
            identities.append(f"{fake},{source_name(faces[k])}")
    for folder, meta in metadata.items():
        (folder / METADATA).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (out_dir / IDENTITIES).write_text("\n".join(identities) + "\n")
    return out_dir


# the demo's two refusals: a name metadata.json lists with no file, a file metadata.json does not list
MISSING_VIDEO, UNLISTED_VIDEO = "listedmissing.mp4", "notinmetadata.mp4"


def add_refusals(out_dir: str | Path) -> dict[str, str]:
    """Make a written sample show ingest's refusals: list :data:`MISSING_VIDEO` in the first folder's
    metadata.json without writing it, and copy its first REAL to :data:`UNLISTED_VIDEO` with no entry.

    Ingest quarantines both (``missing_file``, ``missing_metadata``: the ``ingest-refused`` artifact);
    evaluate scores the unlisted file and lists it as unlabelled. Idempotent. Returns
    {"missing": path, "unlisted": path} relative to ``out_dir``.
    """
    out_dir = Path(out_dir)
    folders = sorted(out_dir.glob(PART_DIR.format("*"))) or [out_dir]
    folder = folders[0]
    meta_path = folder / METADATA
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no metadata.json (write the sample first: make_dfdc_sample)")
    meta = json.loads(meta_path.read_text())
    real = next((name for name, e in sorted(meta.items()) if e["label"] == REAL and (folder / name).is_file()), None)
    if real is None:
        raise ValueError(f"{meta_path}: lists no REAL video on disk to copy as the unlisted file")
    meta[MISSING_VIDEO] = {"label": REAL, "split": "train", "original": None, "manipulation": None}
    meta.pop(UNLISTED_VIDEO, None)
    (folder / UNLISTED_VIDEO).write_bytes((folder / real).read_bytes())
    (folder / MISSING_VIDEO).unlink(missing_ok=True)
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    rel = lambda name: str((folder / name).relative_to(out_dir))  # noqa: E731
    return {"missing": rel(MISSING_VIDEO), "unlisted": rel(UNLISTED_VIDEO)}


def make_single_folder_sample(out_dir: str | Path, **kwargs) -> Path:
    """Flat sample like DFDC's ``train_sample_videos/``: ``make_dfdc_sample(parts=0, ...)``."""
    if "parts" in kwargs:
        raise TypeError("make_single_folder_sample writes no parts; use make_dfdc_sample")
    return make_dfdc_sample(out_dir, parts=0, **kwargs)


# --------------------------------------------------------------------------- in memory (bench/learning.py)

LIPSYNC_MANIPULATIONS = ("lipsync_offset", "audio_swap", "mouth_decorrelated")


@dataclass(frozen=True)
class MemoryClip:
    """One clip of :func:`lipsync_clips`: frames (N', H, W, 3) uint8, finished audio (n,) float32,
    the mouth opening shown in each frame (N',), the face centre (N', 2) x, y and its side in pixels."""

    identity: int
    manipulation: str | None  # None for the REAL clip
    frames: np.ndarray
    audio: np.ndarray
    mouth: np.ndarray
    centre: np.ndarray
    face_side: float


def lipsync_clips(n_real: int, *, pool: str = "train", seed: int = 0, duration_s: float = 3.2,
                  size: tuple[int, int] = (160, 160), fps: float = 25, keep_every: int = 5,
                  audio_rate: int = 16000) -> list[MemoryClip]:  # fmt: skip
    """The REAL clip and one fake per :data:`LIPSYNC_MANIPULATIONS` of each of ``n_real`` identities,
    in memory, with :func:`make_dfdc_sample`'s faces, voices, random streams and manipulations; only
    every ``keep_every``-th frame is rendered (5 of 25 fps: the frames ingest keeps). No encoding."""
    controls = ShortcutControls()
    n_frames = int(round(duration_s * fps))
    idx = np.arange(0, n_frames, keep_every)
    faces, donors = pool_faces(seed, n_real, pool), pool_sources(pool)[0]
    rng_of = lambda *key: _rng(seed, *_POOL_KEYS[pool], *key)  # noqa: E731
    voices = [_speaker(rng_of(k, 1), duration_s, audio_rate, controls.lead_silence_s) for k in range(n_real)]
    out = []
    for k, voice in enumerate(voices):
        look = draw_look(rng_of(k, 0), faces[k])
        scene = draw_scene(rng_of(k, 3), look, size, n_frames, fps)
        sub = replace(scene, cx=scene.cx[idx], cy=scene.cy[idx], scale=scene.scale[idx], angle=scene.angle[idx],
                      blink=scene.blink[idx])  # fmt: skip
        audio = _clip_audio(voice.stream, voice.lead_s, audio_rate, duration_s)
        mouth = _mouth(audio, audio_rate, fps, n_frames)
        frames = render(sub, mouth[idx])
        original = _Original(look, scene, voice, audio, mouth, frames, voices[:k] + voices[k + 1 :], donors,
                             duration_s, fps, audio_rate, controls.lead_silence_s)  # fmt: skip
        clips = [(None, frames, audio, mouth[idx])]
        for name in LIPSYNC_MANIPULATIONS:
            rng = rng_of(k, 10 + MANIPULATIONS.index(name))
            if name == "mouth_decorrelated":  # _mouth_decorrelated's draws, rendered at the kept frames only
                other = _speaker(rng, duration_s, audio_rate, controls.lead_silence_s)
                m2 = _mouth(_clip_audio(other.stream, other.lead_s, audio_rate, duration_s), audio_rate, fps, n_frames)
                clips.append((name, render(sub, m2[idx]), audio, m2[idx]))
            else:  # sound-only manipulations: the REAL frames
                clips.append((name, frames, _REGISTRY[name](rng, original)[1], mouth[idx]))
        centre = np.stack([sub.cx, sub.cy], axis=1)  # (N', 2)
        side = float(scene.face_px * np.mean(sub.scale))
        for j, (name, fr, au, mo) in enumerate(clips):
            fin = _finish(au, rng_of(k, 2 + 100 * j), controls)
            out.append(MemoryClip(k, name, fr, fin, mo.astype(np.float32), centre, side))
    return out
