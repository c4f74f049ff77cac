"""Ingest throughput: avff's per-video preprocessing against decode limits and a naive pipeline.

    python bench/ingest.py                      # table + bench/results/ingest.json (7 min on a shared 2-core box)
    python bench/ingest.py --workers 1,2,4 --reps 5 --full --naive-videos all   # a bigger run

Videos: the real DFDC sample in ``../shared/data/dfdc_sample`` (resolved from this file),
``--data DIR`` for another folder of .mp4, or ``--generate`` for 1080p 10 s H.264 (with
B-frames, re-encoded by ffmpeg from the project's generator) + AAC videos.

Variants, each run over the same videos by W worker processes (a spawn ``ProcessPoolExecutor``,
one task per video), W in ``--workers`` (default 1 and ``os.cpu_count()``):

- ``limit_a``      PyAV decode of every video frame (no RGB conversion) + the audio stream, one
                   demux pass; ``thread_type="AUTO"`` like ``tasks.video``.
- ``limit_b``      the cheapest decode that still yields the sampled frames: the same with
                   ``skip_frame="BIDIR"`` (I/P frames only).
- ``nonkey``       keyframes only (``skip_frame="NONKEY"``), for reference: too sparse to sample.
- ``*_none`` / ``*_default``  the limits single-threaded (``thread_type="NONE"``) and with PyAV's
                   default (``SLICE`` threads, count 0 = auto), W=1 only unless ``--full``.
- ``ffmpeg_a`` / ``ffmpeg_b``  cross-check: ``ffmpeg -threads 1 [-skip_frame bidir] -i X -f null -``
                   (imageio-ffmpeg's binary, command built with ffmpeg-python), W=1 unless ``--full``.
- ``naive``        the textbook pipeline: every frame to RGB, mediapipe full-range detection on
                   every full-resolution frame, crop every frame, log-mel, a shard written for
                   real. Slow, so each repetition gives it W videos (one per worker, rotating
                   through the list; ``--naive-videos all`` for every video): videos/s stays a rate.
- ``avff``         ``tasks.shards.process_unit`` end to end, one unit (= shard) per video, the
                   face detector built once per worker (as a Ray actor would hold it); its
                   per-stage seconds come from ``UnitRecord.videos[i]["seconds"]`` plus
                   ``encode`` (JPEG/npy, timed around ``encode_sample``) and ``write`` (timed
                   around the TarWriter) from a wrapper local to this benchmark.
- ``ray``          the real fan-out ``flows.ingest._run`` (IngestConfig(executor="ray")) over N
                   units of the same videos on a local Ray with N = os.cpu_count() CPUs; its
                   1-worker twin submits the same ``_process_unit_dict`` with ``num_cpus=N`` so the
                   units run one at a time in the same Ray session (no restart between reps).

Every number is a median over ``--reps`` repetitions; inside a repetition the variants run
one after another in a rotated order, so slow drift (other people's tests on this machine)
hits them alike. Ratios compare medians of the same run. Besides wall-clock videos/s the
table gives CPU seconds per video (user+sys of the worker and its ffmpeg children), which
is far less sensitive to a shared machine.

PyAV vs ffmpeg: the same FFmpeg H.264 decoder (PyAV 18 bundles libavcodec 62, imageio-ffmpeg's
binary is FFmpeg 7.0.2). Single-threaded, their CPU seconds per video agree within ~2-12 %
(``limit_a_none`` vs ``ffmpeg_a``, ``limit_b_none`` vs ``ffmpeg_b``), ffmpeg usually the higher:
it starts a process, probes the streams (decoding the first frames), and pushes every frame
through a filter graph and the null muxer's wrapped_avframe/PCM "encoders". Wall-clock gaps
come from threads: PyAV's default (SLICE, automatic count) does nothing for DFDC's
one-slice-per-frame H.264; ``AUTO`` adds frame threads that cost 6-17 % more CPU and win wall
time only while a core is idle; the ffmpeg 7 CLI runs demux, decode and mux on separate
threads even at ``-threads 1``. PyAV's per-frame Python objects cost microseconds, nothing
at 1080p. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"

# per worker process: the face detector and scratch dirs live as long as the worker (a pool
# initializer cannot return them, so they sit in this dict instead of being rebuilt per video)
_WORKER: dict = {}


# ---------------------------------------------------------------- inputs


def shared_videos() -> list[str]:
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfdc_sample"
    return sorted(str(p) for p in root.glob("*.mp4"))


def generate_videos(out: Path, size: tuple[int, int] = (1080, 1920), n_fakes: int = 3) -> list[str]:
    """1 real + n_fakes fakes, 10 s at 29.97 fps, re-encoded with B-frames like DFDC's streams."""
    import ffmpeg
    import imageio_ffmpeg

    from tasks.sample_data import MANIPULATIONS, make_dfdc_sample

    raw = out / "raw"
    make_dfdc_sample(raw, n_real=1, parts=0, duration_s=10.0, size=size, fps=29.97,
                     manipulations=MANIPULATIONS[:n_fakes])  # fmt: skip
    videos = []
    for src in sorted(raw.glob("*.mp4")):
        dst = out / src.name
        # the generator's "ultrafast" preset writes no B-frames; DFDC has ~220 in 300 frames
        (ffmpeg.input(str(src)).output(str(dst), vcodec="libx264", preset="veryfast", bf=3, crf=23, acodec="copy")
         .global_args("-nostdin", "-v", "error").overwrite_output().run(cmd=imageio_ffmpeg.get_ffmpeg_exe()))  # fmt: skip
        videos.append(str(dst))
    return videos


# ---------------------------------------------------------------- measurement in the worker


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap, so a variant's peak is its own
    except OSError:
        pass


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _task(variant: str, path: str, opts: dict) -> dict:
    """Run one variant on one video in this worker; wall, CPU, peak RSS and variant extras."""
    _malloc_trim()
    reset = _reset_peak()
    start_rss = _rss_mb("VmRSS")
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    extra = _VIDEO_VARIANTS[variant](path, opts)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu() - k0
    peak = _rss_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"video": path, "wall": wall, "cpu": cpu, "peak_rss_mb": peak, "start_rss_mb": start_rss, **extra}


def _init_worker(tmp_root: str) -> None:
    _WORKER["tmp"] = tempfile.mkdtemp(dir=tmp_root, prefix="worker-")  # removed with the driver's tmp


def _warm(_: int) -> float:
    """Before any timing: import everything and build the detector in every worker."""
    import av  # noqa: F401

    import flows.ingest  # noqa: F401  (imports prefect: seconds, never inside a timed task)
    import tasks.shards  # noqa: F401
    from tasks.faces import FaceDetector

    if "detector" not in _WORKER:
        _WORKER["detector"] = FaceDetector()
    time.sleep(0.5)  # keep this worker busy so the other warm-up calls land on other workers
    return _rss_mb("VmRSS")


# ---------------------------------------------------------------- variants (one video each)


def _pyav_decode(path: str, skip: str | None, thread_type: str | None) -> dict:
    """Demux once; decode video (optionally skipping frames) and the audio; convert nothing."""
    import av

    frames = audio = 0
    with av.open(path, metadata_errors="ignore") as c:
        v = c.streams.video[0]
        if thread_type is not None:  # None: PyAV's default (SLICE, thread_count 0)
            v.thread_type = thread_type
        if skip:
            v.codec_context.skip_frame = skip
        streams = [v] + list(c.streams.audio[:1])
        for packet in c.demux(*streams):
            for frame in packet.decode():
                if packet.stream.type == "video":
                    frames += 1
                else:
                    audio += frame.samples
    return {"frames": frames, "audio_samples": audio}


def _ffmpeg_null(path: str, skip: str | None) -> dict:
    import ffmpeg
    import imageio_ffmpeg

    args = {"threads": 1, **({"skip_frame": skip} if skip else {})}
    cmd = ffmpeg.input(path, **args).output("-", f="null").global_args("-nostdin", "-v", "error")
    subprocess.run(cmd.compile(cmd=imageio_ffmpeg.get_ffmpeg_exe()), check=True)
    return {}


def _naive(path: str, opts: dict) -> dict:
    """Every frame -> RGB -> full-range detection at full resolution -> crop; mel; shard."""
    import av
    import numpy as np
    import webdataset as wds

    from storage.schema import ClipMeta, encode_sample
    from tasks.audio import SILENCE_LOG_MEL, decode_audio, log_mel, mel_window
    from tasks.faces import FaceDetector, _main_face, crop_square
    from tasks.preprocess import PreprocessConfig, clip_starts

    cfg = PreprocessConfig()
    det: FaceDetector = _WORKER["detector"]
    crops, times = [], []
    box = None
    with av.open(path) as c:
        for frame in c.decode(c.streams.video[0]):
            rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) full resolution
            dets = det._run(det.full, rgb)
            if dets:
                box = _main_face(dets)[0]
            if box is not None:
                crops.append(crop_square(rgb, box, cfg.face_size, cfg.face_margin))
                times.append(float(frame.time))
    mel = log_mel(decode_audio(path, cfg.sample_rate), cfg.mel)
    times_a = np.asarray(times)
    out = os.path.join(_WORKER["tmp"], "naive.tar")
    n_bytes = 0
    with open(out, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0.0)
        for k, start in enumerate(clip_starts(times[-1] if times else 0.0, cfg.clip_seconds, cfg.max_clips)):
            want = start + np.arange(cfg.frames_per_clip) / cfg.clip_fps
            idx = np.abs(times_a[None, :] - want[:, None]).argmin(axis=1)  # nearest frame per time
            meta = ClipMeta(video_id=Path(path).stem, clip=k, label="REAL", split="train", group="g",
                            original=None, start_s=start, fps=cfg.clip_fps, num_frames=cfg.frames_per_clip,
                            face_box=[0.0] * 4, det_score=0.0, detected_frac=1.0, mel_hop_s=cfg.mel.hop_s)  # fmt: skip
            clip_mel = mel_window(mel, start, cfg.mel_frames, cfg.mel.hop_s, SILENCE_LOG_MEL)
            writer.write(encode_sample(np.stack([crops[i] for i in idx]), clip_mel, meta))
        writer.close()
    n_bytes = os.path.getsize(out)
    os.remove(out)
    return {"frames": len(times), "shard_bytes": n_bytes}


def _timed_stages():
    """Patch tasks.shards (in this worker only) so encode_sample and TarWriter report their time."""
    import webdataset as wds

    import tasks.shards as shards

    if "timers" in _WORKER:
        return _WORKER["timers"]
    timers = {"encode": 0.0, "write": 0.0}
    encode = shards.encode_sample

    def timed_encode(*a, **k):
        t = time.perf_counter()
        try:
            return encode(*a, **k)
        finally:
            timers["encode"] += time.perf_counter() - t

    class TimedTarWriter(wds.TarWriter):
        def write(self, obj):
            t = time.perf_counter()
            try:
                return super().write(obj)
            finally:
                timers["write"] += time.perf_counter() - t

        def close(self):
            t = time.perf_counter()
            try:
                return super().close()
            finally:
                timers["write"] += time.perf_counter() - t

    class WdsProxy:  # tasks.shards sees webdataset with a timed TarWriter
        TarWriter = TimedTarWriter

        def __getattr__(self, name):
            return getattr(wds, name)

    shards.encode_sample = timed_encode
    shards.wds = WdsProxy()
    _WORKER["timers"] = timers
    return timers


def unit_for(paths: list[str], shard: str):
    from tasks.shards import UnitVideo, WorkUnit, fingerprint

    videos = tuple(
        UnitVideo(video_id=f"v{i:03d}_{Path(p).stem}", path=p, rel_path=Path(p).name, part="bench", label="REAL",
                  split="train", group=f"v{i:03d}", original=None, fingerprint=fingerprint(p))  # fmt: skip
        for i, p in enumerate(paths)
    )
    return WorkUnit(split="train", part="bench", chunk=0, shard=shard, videos=videos)


def _avff(path: str, opts: dict) -> dict:
    from flows.ingest import IngestConfig
    from tasks.shards import process_unit

    timers = _timed_stages()
    timers.update(encode=0.0, write=0.0)
    out = tempfile.mkdtemp(dir=_WORKER["tmp"])
    try:
        unit = unit_for([path], os.path.join(out, "shard.tar"))
        t = time.perf_counter()
        rec = process_unit(unit, IngestConfig(data=".", out=out).preprocess(), detector=_WORKER["detector"])
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if rec.quarantined:
        raise RuntimeError(f"avff quarantined {path}: {rec.quarantined}")
    stages = dict(rec.videos[0]["seconds"])
    stages["encode"], stages["write"] = timers["encode"], timers["write"]
    stages["finalize"] = rec.seconds - sum(stages.values())  # sha256, copy into place, temp dirs
    stages["record"] = total - rec.seconds  # the .tar.json record
    return {"shard_bytes": rec.bytes, "clips": rec.samples, "stages": stages}


_VIDEO_VARIANTS = {
    "limit_a": lambda p, o: _pyav_decode(p, None, "AUTO"),
    "limit_a_none": lambda p, o: _pyav_decode(p, None, "NONE"),
    "limit_a_default": lambda p, o: _pyav_decode(p, None, None),
    "limit_b": lambda p, o: _pyav_decode(p, "BIDIR", "AUTO"),
    "limit_b_none": lambda p, o: _pyav_decode(p, "BIDIR", "NONE"),
    "limit_b_default": lambda p, o: _pyav_decode(p, "BIDIR", None),
    "nonkey": lambda p, o: _pyav_decode(p, "NONKEY", "AUTO"),
    "ffmpeg_a": lambda p, o: _ffmpeg_null(p, None),
    "ffmpeg_b": lambda p, o: _ffmpeg_null(p, "bidir"),
    "naive": _naive,
    "avff": _avff,
}
W1_ONLY = ("limit_a_none", "limit_b_none", "limit_b_default", "ffmpeg_a", "ffmpeg_b")  # every W with --full
FULL_ONLY = ("limit_a_default",)  # only with --full


# ---------------------------------------------------------------- batches (driver side)


def run_pool_batch(pool: ProcessPoolExecutor, variant: str, videos: list[str]) -> dict:
    t0 = time.perf_counter()
    futures = [pool.submit(_task, variant, v, {}) for v in videos]
    tasks = [f.result() for f in futures]
    return {"wall": time.perf_counter() - t0, "videos": len(videos), "tasks": tasks}


def _ray_warm(_: int) -> int:
    import flows.ingest  # noqa: F401
    import tasks.shards  # noqa: F401
    from tasks.faces import FaceDetector

    FaceDetector().close()
    time.sleep(0.5)
    return os.getpid()


class RayBench:
    """A fresh local Ray with n CPUs, bound to 127.0.0.1; N-worker and 1-worker batches.

    Started here with ``address="local"`` and the settings of ``flows.ingest.init_ray``:
    ``init_ray(None, n)`` itself would join any Ray already running on this machine (another
    user's, found through /tmp/ray) and then fail on ``num_cpus``. ``_run`` reuses this one.
    """

    def __init__(self, n: int, videos: list[str], tmp: Path):
        import ray

        from flows.ingest import IngestConfig

        self.n, self.videos, self.tmp = n, videos, tmp
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # single-node mode: every port on 127.0.0.1
        # Ray ends workers idle for 10 s beyond its soft limit: while a 1-worker batch holds all
        # CPUs the other, warm worker would be killed and the next N-worker batch would wait for
        # a fresh one to import torch/mediapipe. A real ingest keeps its workers busy throughout.
        os.environ["RAY_idle_worker_killing_time_threshold_ms"] = str(3_600_000)
        ray.init(address="local", num_cpus=n, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)  # fmt: skip
        self.ray = ray
        self.cfg = IngestConfig(data=str(tmp), out=str(tmp), executor="ray", num_workers=n, progress=False)
        warm = self.ray.remote(num_cpus=1)(_ray_warm)
        self.ray.get([warm.remote(i) for i in range(n)])  # import + detector in every worker first
        self.batches = 0

    def units(self):
        self.batches += 1
        per = math.ceil(len(self.videos) / self.n)  # n units: one per worker
        chunks = [self.videos[i : i + per] for i in range(0, len(self.videos), per)]
        out = self.tmp / f"ray-{self.batches}"
        return [unit_for(c, str(out / f"unit-{i}.tar")) for i, c in enumerate(chunks)], out

    def batch(self, workers: int) -> dict:
        from flows.ingest import _process_unit_dict, _run

        units, out = self.units()
        pre = self.cfg.preprocess()
        t0 = time.perf_counter()
        if workers == self.n:
            records = [rec for _, rec, err in _run(units, pre, self.cfg) if err is None]
        else:  # a unit claims all n CPUs, so units run one at a time in the same Ray session
            remote = self.ray.remote(num_cpus=self.n)(_process_unit_dict)
            records = self.ray.get([remote.remote(u, pre, self.cfg.jpeg_quality) for u in units])
        wall = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        n_videos = sum(len(r["videos"]) for r in records)
        if n_videos != len(self.videos):
            raise RuntimeError(f"ray batch processed {n_videos} of {len(self.videos)} videos")
        return {"wall": wall, "videos": n_videos, "units": len(units), "unit_seconds": [r["seconds"] for r in records],
                "shard_bytes": sum(r["bytes"] for r in records), "tasks": []}  # fmt: skip

    def close(self) -> None:
        self.ray.shutdown()


# ---------------------------------------------------------------- summary


def summarize(batches: list[dict], workers: int) -> dict:
    """Medians over repetitions of one (variant, W)."""
    vps = [b["videos"] / b["wall"] for b in batches]
    tasks = [t for b in batches for t in b["tasks"]]
    row = {
        "workers": workers,
        "reps": len(batches),
        "videos_per_rep": statistics.median(b["videos"] for b in batches),
        "videos_per_s": statistics.median(vps),
        "videos_per_s_all": vps,
        "core_s_per_video": workers / statistics.median(vps),
    }
    if tasks:
        row["cpu_s_per_video"] = statistics.median(t["cpu"] for t in tasks)
        row["peak_rss_mb"] = max(t["peak_rss_mb"] for t in tasks)
        row["start_rss_mb"] = statistics.median(t["start_rss_mb"] for t in tasks)
        if "shard_bytes" in tasks[0]:
            row["shard_bytes_per_video"] = statistics.median(t["shard_bytes"] for t in tasks)
        if "stages" in tasks[0]:
            row["stages_s"] = {k: statistics.median(t["stages"][k] for t in tasks) for k in tasks[0]["stages"]}
    elif "shard_bytes" in batches[0]:
        row["shard_bytes_per_video"] = statistics.median(b["shard_bytes"] / b["videos"] for b in batches)
    if "unit_seconds" in batches[0]:  # time inside process_unit, per video: the rest of core-s is scheduling
        row["unit_s_per_video"] = statistics.median(sum(b["unit_seconds"]) / b["videos"] for b in batches)
    return row


def profile_avff(videos: list[str], top: int = 20) -> list[dict]:
    """cProfile of avff (process_unit per video) in this process, W=1; the top functions by own time."""
    import cProfile
    import pstats

    _init_worker(tempfile.mkdtemp(prefix="avff-bench-profile-"))
    _warm(0)
    _avff(videos[0], {})  # first call outside the profile (lazy imports, graph warm-up)
    prof = cProfile.Profile()
    prof.enable()
    for v in videos:
        _avff(v, {})
    prof.disable()
    shutil.rmtree(os.path.dirname(_WORKER["tmp"]), ignore_errors=True)
    stats = pstats.Stats(prof).stats
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    n = len(videos)
    return [{"function": f"{Path(f).name}:{line}({name})", "calls_per_video": nc / n, "own_s_per_video": tt / n,
             "cum_s_per_video": ct / n} for (f, line, name), (_, nc, tt, ct, _) in rows]  # fmt: skip


def machine_info() -> dict:
    import av
    import cv2
    import mediapipe
    import numpy
    import ray
    import torch
    import webdataset

    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    ffmpeg_version = "?"
    try:
        import imageio_ffmpeg

        ffmpeg_version = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-version"], capture_output=True,
                                        text=True).stdout.split("\n")[0]  # fmt: skip
    except Exception:  # the cross-check is optional
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "av": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "ffmpeg_cli": ffmpeg_version,
        "mediapipe": mediapipe.__version__,
        "torch": torch.__version__,
        "ray": ray.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "webdataset": getattr(webdataset, "__version__", "?"),
    }


TARGETS = (  # (name, numerator, denominator, minimum ratio of videos/s)
    ("avff >= 2x limit(a)", "avff", "limit_a", 2.0),
    ("avff >= 0.8x limit(b)", "avff", "limit_b", 0.8),
    ("avff >= 10x naive", "avff", "naive", 10.0),
)


def ratios(rows: dict, workers: list[int], n_cpu: int) -> tuple[list[dict], dict]:
    checks, extra = [], {}
    for w in workers:
        for name, num, den, need in TARGETS:
            a, b = rows.get((num, w)), rows.get((den, w))
            if a and b:
                r = a["videos_per_s"] / b["videos_per_s"]
                r_cpu = b["cpu_s_per_video"] / a["cpu_s_per_video"]
                checks.append({"target": name, "workers": w, "ratio": r, "cpu_ratio": r_cpu, "need": need, "pass": r >= need})
    ws = sorted(workers)
    if len(ws) > 1:
        lo, hi = ws[0], ws[-1]
        if rows.get(("avff", lo)) and rows.get(("avff", hi)):
            extra["avff_pool_scaling"] = rows[("avff", hi)]["videos_per_s"] / rows[("avff", lo)]["videos_per_s"]
    for w in ws:  # what any pipeline that decodes the I/P frames can reach at best
        a, b, nv = rows.get(("limit_a", w)), rows.get(("limit_b", w)), rows.get(("naive", w))
        if a and b:
            extra[f"ceiling avff/limit(a) = limit(b)/limit(a), W={w}"] = b["videos_per_s"] / a["videos_per_s"]
            extra[f"ceiling avff/limit(a), cpu, W={w}"] = a["cpu_s_per_video"] / b["cpu_s_per_video"]
        if nv and b:
            extra[f"ceiling avff/naive = limit(b)/naive, W={w}"] = b["videos_per_s"] / nv["videos_per_s"]
            extra[f"ceiling avff/naive, cpu, W={w}"] = nv["cpu_s_per_video"] / b["cpu_s_per_video"]
    r1, rn = rows.get(("ray", 1)), rows.get(("ray", n_cpu))
    if r1 and rn and n_cpu > 1:
        r = rn["videos_per_s"] / r1["videos_per_s"]
        need = 0.8 * n_cpu
        checks.append({"target": f"ray {n_cpu} workers >= 0.8*{n_cpu} x 1 worker", "workers": n_cpu, "ratio": r,
                       "cpu_ratio": None, "need": need, "pass": r >= need})  # fmt: skip
    return checks, extra


def print_table(rows: dict, checks: list[dict], extra: dict, info: dict) -> None:
    print(f"\n{info['cpu_count']} cores, {info['cpu_model']}; load average at start {info['loadavg_start']}, "
          f"end {info.get('loadavg_end')}")  # fmt: skip
    head = f"{'variant':16s} {'W':>2s} {'videos/s':>9s} {'core-s/video':>12s} {'cpu s/video':>11s} {'peak RSS MB':>11s} {'+RSS MB':>8s} {'shard kB/video':>14s}"
    print(head + "\n" + "-" * len(head))
    for (name, w), r in rows.items():
        cpu = f"{r['cpu_s_per_video']:11.3f}" if "cpu_s_per_video" in r else f"{'-':>11s}"
        rss = (f"{r['peak_rss_mb']:11.0f} {r['peak_rss_mb'] - r['start_rss_mb']:8.0f}" if "peak_rss_mb" in r
               else f"{'-':>11s} {'-':>8s}")  # fmt: skip
        kb = f"{r['shard_bytes_per_video'] / 1e3:14.1f}" if "shard_bytes_per_video" in r else f"{'-':>14s}"
        print(f"{name:16s} {w:2d} {r['videos_per_s']:9.3f} {r['core_s_per_video']:12.3f} {cpu} {rss} {kb}")
    print("\navff stages, median seconds per video:")
    for (name, w), r in rows.items():
        if "stages_s" in r:
            total = sum(r["stages_s"].values())
            parts = "  ".join(f"{k} {v:.3f} ({v / total:.0%})" for k, v in r["stages_s"].items())
            print(f"  W={w}: {parts}  | sum {total:.3f}")
    print("\ntargets (ratio of median videos/s; cpu = the same ratio from CPU s/video):")
    for c in checks:
        cpu = f"  cpu {c['cpu_ratio']:.2f}x" if c["cpu_ratio"] is not None else ""
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['target']:34s} W={c['workers']}: {c['ratio']:.2f}x (need {c['need']:.2f}){cpu}")
    for k, v in extra.items():
        print(f"  info  {k}: {v:.2f}x")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="folder of .mp4 videos (default: ../shared/data/dfdc_sample)")
    ap.add_argument("--generate", action="store_true", help="use generated 1080p H.264 (B-frames) + AAC videos")
    ap.add_argument("--workers", default=None, help="comma-separated W values (default: 1,os.cpu_count())")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--naive-videos", default="workers", help="'workers' (W per rep, rotating) or 'all'")
    ap.add_argument("--full", action="store_true", help="thread-mode and ffmpeg rows at every W, not only W=1")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--variants", default=None, help="comma-separated subset of the pool variants")
    ap.add_argument("--profile", action="store_true", help="also cProfile avff in-process (W=1) at the end")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    n_cpu = os.cpu_count() or 1
    workers = sorted({int(w) for w in args.workers.split(",")}) if args.workers else sorted({1, n_cpu})
    tmp = Path(tempfile.mkdtemp(prefix="avff-bench-ingest-"))
    try:
        if args.data:
            videos = sorted(str(p) for p in Path(args.data).glob("*.mp4"))
        elif not args.generate and shared_videos():
            videos = shared_videos()
        else:
            print("generating 1080p videos (B-frames) ...", flush=True)
            videos = generate_videos(tmp / "videos")
        if not videos:
            raise SystemExit("no videos")
        info = machine_info()
        print(f"{len(videos)} videos: {', '.join(Path(v).name for v in videos)}; W in {workers}; {args.reps} reps", flush=True)
        variants = args.variants.split(",") if args.variants else list(_VIDEO_VARIANTS)
        plan = {w: [v for v in variants if (w == 1 or args.full or v not in W1_ONLY) and (args.full or v not in FULL_ONLY)]
                for w in workers}  # fmt: skip
        batches: dict[tuple[str, int], list[dict]] = {}
        ctx = mp.get_context("spawn")
        pools = {w: ProcessPoolExecutor(max_workers=w, mp_context=ctx, initializer=_init_worker, initargs=(str(tmp),))
                 for w in workers}
        try:
            for w, pool in pools.items():
                list(pool.map(_warm, range(w)))
            ray_bench = None
            if not args.no_ray:
                ray_bench = RayBench(n_cpu, videos, tmp)
            try:
                naive_i = 0
                for rep in range(args.reps):
                    for w in workers:
                        order = plan[w] + (["ray"] if ray_bench and w in (1, n_cpu) else [])
                        k = (rep * 3 + w) % len(order)
                        order = order[k:] + order[:k]  # rotate: no variant always runs first or last
                        for variant in order:
                            t = time.perf_counter()
                            if variant == "ray":
                                b = ray_bench.batch(w)
                            elif variant == "naive" and args.naive_videos != "all":
                                vids = [videos[(naive_i + i) % len(videos)] for i in range(w)]
                                naive_i += w
                                b = run_pool_batch(pools[w], variant, vids)
                            else:
                                b = run_pool_batch(pools[w], variant, videos)
                            batches.setdefault((variant, w), []).append(b)
                            print(f"rep {rep} W={w} {variant:16s} {b['videos'] / b['wall']:7.3f} videos/s "
                                  f"({time.perf_counter() - t:.1f}s)", flush=True)  # fmt: skip
            finally:
                if ray_bench:
                    ray_bench.close()
        finally:
            for pool in pools.values():
                pool.shutdown(cancel_futures=True)
        info["loadavg_end"] = os.getloadavg()
        order = [v for v in list(_VIDEO_VARIANTS) + ["ray"]]
        rows = {(v, w): summarize(batches[(v, w)], w) for v in order for w in workers if (v, w) in batches}
        checks, extra = ratios(rows, workers, n_cpu)
        print_table(rows, checks, extra, info)
        profile = None
        if args.profile:
            profile = profile_avff(videos)
            print("\ncProfile of avff, W=1, seconds per video (own time, top functions):")
            for p in profile:
                print(f"  {p['own_s_per_video']:7.3f} own {p['cum_s_per_video']:7.3f} cum {p['calls_per_video']:7.1f} calls  {p['function']}")
        result = {
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "machine": info,
            "videos": videos,
            "workers": workers,
            "reps": args.reps,
            "naive_videos": args.naive_videos,
            "rows": [{"variant": v, **r} for (v, _), r in rows.items()],
            "targets": checks,
            "info": extra,
            "profile": profile,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
        print(f"\nwrote {args.out}")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
