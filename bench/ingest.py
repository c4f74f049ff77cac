"""What ``avff ingest`` costs per video, beside two decode limits and a naive pipeline, broken into stages.

    python bench/ingest.py                       # the real DFDC clips in ../shared/data/dfdc_sample
    python bench/ingest.py --copies 12 --reps 2 --ray-workers 1 2

Every number is CPU seconds per video (user + sys), the median over ``--reps``; the variants run
one after another in each repetition. A copy of a clip is its bytes plus a trailing MP4 ``free``
box naming the copy (ingest refuses byte-identical files), so every copy decodes identically.

- ``full``        (limit a) PyAV decode of every video frame + every audio frame, no conversion.
- ``nonref``      (limit n) the same with ``skip_frame="NONREF"``: every reference frame and no
                  other; the floor of any exact sampler.
- ``naive``       the obvious pipeline: decode every frame, RGB + full-range face detection on
                  every 6th, audio + log-mel. No crops, no JPEG, no shard.
- ``process_unit`` ``tasks.ingest.write_unit.process_unit`` in this process with one detector.
- ``cli``         the command users run, ``avff ingest --executor local``, as a child process; its
                  CPU is ``getrusage(RUSAGE_CHILDREN)`` around it, so the temporary Prefect server it
                  starts is counted.

``process_unit`` and ``cli`` are marginal: a run over ``--copies`` copies of every clip minus a run
over one copy, divided by the extra videos, so start-up (imports, detector graphs, the Prefect
server's start) is not counted. The ``cli`` breakdown is read from the run's own shard records:
per video, the stages of ``tasks/ingest/stages.py`` (+ ``other``: inside a video, claimed by no
stage), then ``unit`` (a shard's own work: open, publish, sha256, record) and ``orchestration``
(the CLI minus its units: Prefect task runs, logging, artifacts, the temporary server). The rows
add up to the ``cli`` number by construction.

``--ray-workers``: the same command with ``--executor ray --num-workers W`` (wall time; efficiency
per worker = rate(W) / (W x rate(1))). Ray's raylet and workers are not all children the CLI
waits for, so their CPU is not fully in getrusage: the table shows wall rates only.
Results go to bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

from storage.shard_schema import REAL
from tasks.ingest.audio import decode_audio, log_mel
from tasks.ingest.faces import FaceDetector
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.stages import NAMES, OTHER
from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, process_unit

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfdc_sample"
REPO = Path(__file__).resolve().parents[1]
UNIT, ORCHESTRATION = "unit", "orchestration"
BREAKDOWN = (*NAMES, OTHER, UNIT, ORCHESTRATION)  # the rows of the cli breakdown, pipeline order


# --------------------------------------------------------------------------- inputs


def make_copies(videos: list[Path], copies: int, dst: Path) -> Path:
    """``copies`` distinct files per video under dst (+ metadata.json labelling them as the source did)."""
    dst.mkdir(parents=True, exist_ok=True)
    src_meta = videos[0].parent / "metadata.json"
    labels = json.loads(src_meta.read_text()) if src_meta.exists() else {}
    meta = {}
    for p in videos:
        data = p.read_bytes()
        for k in range(copies):
            name = f"{p.stem}_{k:02d}.mp4"
            # a trailing 'free' box (size 16) is valid MP4 that every demuxer skips: other bytes, same video
            (dst / name).write_bytes(data + struct.pack(">I4sQ", 16, b"free", k))
            meta[name] = {**labels.get(p.name, {"label": REAL}), "split": "train"}
    (dst / "metadata.json").write_text(json.dumps(meta))
    return dst


# --------------------------------------------------------------------------- in-process variants


def decode_limit(path: str, skip: str | None) -> float:
    """CPU seconds to decode the video stream (with the codec's skip setting) and the audio stream."""
    t0 = time.process_time()
    with av.open(path) as c:
        v = c.streams.video[0]
        v.thread_type = "NONE"
        if skip:
            v.codec_context.skip_frame = skip
        for _ in c.decode(v):
            pass
    with av.open(path) as c:
        if c.streams.audio:
            for _ in c.decode(c.streams.audio[0]):
                pass
    return time.process_time() - t0


def naive(path: str, detector: FaceDetector, cfg: PreprocessConfig, every: int = 6) -> float:
    """CPU seconds of the obvious pipeline: decode all, RGB + detect every ``every``-th frame, audio + mel."""
    t0 = time.process_time()
    with av.open(path) as c:
        v = c.streams.video[0]
        v.thread_type = "NONE"
        for i, frame in enumerate(c.decode(v)):
            if i % every == 0:
                detector.detect(frame.to_ndarray(format="rgb24"))
    log_mel(decode_audio(path, cfg.sample_rate), cfg.mel)
    return time.process_time() - t0


def _unit(videos: list[Path], copies: int, out: Path) -> WorkUnit:
    entries = tuple(
        UnitVideo(video_id=f"{p.stem}_{k:02d}", path=str(p), rel_path=p.name, part="bench", label=REAL,
                  split="train", group=f"{p.stem}_{k:02d}", original=None, fingerprint=fingerprint(str(p)))
        for k in range(copies) for p in videos
    )  # fmt: skip
    return WorkUnit("train", "bench", 0, str(out / f"c{copies}.tar"), entries)


def unit_cpu(videos: list[Path], copies: int, cfg: PreprocessConfig, detector: FaceDetector) -> float:
    """CPU seconds of process_unit over copies x videos in this process."""
    with tempfile.TemporaryDirectory(prefix="avff-bench-") as tmp:
        unit = _unit(videos, copies, Path(tmp))
        t0 = time.process_time()
        record = process_unit(unit, cfg, detector=detector)
        cpu = time.process_time() - t0
    if record.quarantined:
        raise SystemExit(f"bench videos were refused: {record.quarantined}")
    return cpu


# --------------------------------------------------------------------------- the command


def cli_ingest(data: Path, out: Path, *flags: str) -> dict:
    """Run ``avff ingest`` as a child: CPU seconds (children included), wall seconds, its shard records."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "flows.cli", "ingest", "--data", str(data), "--out", str(out), *flags]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true"}
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    records = [json.loads(p.read_text()) for p in sorted(out.rglob("*.tar.json"))]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu": cpu, "wall": wall, "records": records}


def breakdown(run: dict) -> dict[str, float]:
    """A CLI run's CPU seconds split into BREAKDOWN rows (summed over its videos); they add up to run["cpu"]."""
    rows = dict.fromkeys(BREAKDOWN, 0.0)
    units = 0.0
    for rec in run["records"]:
        units += rec["cpu_seconds"]
        in_videos = 0.0
        for video in rec["videos"]:
            for name, s in video["cpu_seconds"].items():
                rows[name] += s
                in_videos += s
        rows[UNIT] += rec["cpu_seconds"] - in_videos
    rows[ORCHESTRATION] = run["cpu"] - units
    return rows


def videos_in(run: dict) -> int:
    return sum(len(r["videos"]) for r in run["records"])


# --------------------------------------------------------------------------- the run


def run(videos: list[Path], copies: int, reps: int, ray_workers: list[int]) -> dict:
    cfg = PreprocessConfig()
    per: dict[str, list[float]] = {k: [] for k in ("full", "nonref", "naive", "process_unit", "cli")}
    stage_runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="avff-bench-ingest-") as tmp:
        root = Path(tmp)
        one, many = make_copies(videos, 1, root / "one"), make_copies(videos, copies, root / "many")
        with face_detector(cfg) as detector:
            unit_cpu(videos, 1, cfg, detector)  # warm-up: graphs, imports, page cache
            for _ in range(reps):
                per["full"].append(statistics.fmean(decode_limit(str(p), None) for p in videos))
                per["nonref"].append(statistics.fmean(decode_limit(str(p), "NONREF") for p in videos))
                per["naive"].append(statistics.fmean(naive(str(p), detector, cfg) for p in videos))
                extra = len(videos) * (copies - 1)
                per["process_unit"].append((unit_cpu(videos, copies, cfg, detector) - unit_cpu(videos, 1, cfg, detector)) / extra)
                small, big = (cli_ingest(d, root / "out", "--executor", "local") for d in (one, many))
                extra = videos_in(big) - videos_in(small)
                per["cli"].append((big["cpu"] - small["cpu"]) / extra)
                b1, bn = breakdown(small), breakdown(big)
                stage_runs.append({k: (bn[k] - b1[k]) / extra for k in BREAKDOWN})
        fanout = ray_table(many, root / "ray", ray_workers, len(videos) * copies) if ray_workers else []
    med = {k: statistics.median(v) for k, v in per.items()}
    stages = {k: statistics.median(r[k] for r in stage_runs) for k in BREAKDOWN}
    return {
        "videos": [p.name for p in videos],
        "copies": copies,
        "reps": reps,
        "cpu_s_per_video": med,
        "cpu_s_per_video_runs": per,
        "cli_stages_cpu_s": stages,
        "ratios": {
            "cli_over_nonref": med["cli"] / med["nonref"],
            "cli_over_full": med["cli"] / med["full"],
            "cli_over_naive": med["cli"] / med["naive"],
            "process_unit_over_cli": med["process_unit"] / med["cli"],
            "orchestration_share": stages[ORCHESTRATION] / med["cli"],
        },
        "ray_fanout": fanout,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg": os.getloadavg()},  # fmt: skip
    }


def ray_table(data: Path, out: Path, workers: list[int], n_videos: int) -> list[dict]:
    """Wall-clock rate of ``avff ingest --executor ray`` with W workers (shards: 2 per worker of the largest W)."""
    per_shard = max(1, n_videos // (2 * max(workers)))
    rows = []
    for w in workers:
        r = cli_ingest(data, out, "--executor", "ray", "--num-workers", str(w), "--videos-per-shard", str(per_shard))
        rows.append({"workers": w, "wall_s": r["wall"], "videos": videos_in(r), "videos_per_s": videos_in(r) / r["wall"]})
    base = rows[0]["videos_per_s"] / rows[0]["workers"]
    for row in rows:
        row["efficiency"] = row["videos_per_s"] / (row["workers"] * base)
    return rows


def print_table(r: dict) -> None:
    c, s, q = r["cpu_s_per_video"], r["cli_stages_cpu_s"], r["ratios"]
    print(f"{len(r['videos'])} videos x {r['copies']} copies, median of {r['reps']}; CPU seconds per video "
          f"(load average {r['machine']['load_avg'][0]:.1f} on {r['machine']['cpus']} CPUs)")  # fmt: skip
    print(f"{'variant':<40}{'CPU s':>8}{'cli / it':>10}")
    rows = [("full decode (limit a)", "full"), ("reference-only decode (limit n)", "nonref"),
            ("naive: all frames, detect every 6th", "naive"), ("process_unit in this process", "process_unit"),
            ("avff ingest --executor local", "cli")]  # fmt: skip
    for label, key in rows:
        print(f"{label:<40}{c[key]:>8.3f}{c['cli'] / c[key]:>9.2f}x")
    print("avff ingest, CPU s per video by stage (adds up to the command's number):")
    for name in BREAKDOWN:
        print(f"  {name:<16}{s[name]:>7.3f}  {s[name] / c['cli']:>5.1%}")
    print(f"  {'total':<16}{sum(s.values()):>7.3f}")
    for row in r["ray_fanout"]:
        print(f"ray, {row['workers']} worker(s): {row['videos']} videos in {row['wall_s']:.1f} s wall, "
              f"{row['videos_per_s']:.3f} videos/s, efficiency per worker {row['efficiency']:.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED, help="folder of .mp4 files (default: the real DFDC sample)")
    ap.add_argument("--copies", type=int, default=12, help="copies of every video in the big run (>= 2)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2], help="Ray fan-out rows (none: skip)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    videos = sorted(args.data.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no .mp4 under {args.data} (pass --data DIR)")
    if args.copies < 2:
        raise SystemExit("--copies must be >= 2 (the marginal cost needs two run sizes)")
    result = run(videos, args.copies, args.reps, sorted(set(args.ray_workers)))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
