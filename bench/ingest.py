"""Ingest cost per video against two decode limits, measured in the same run.

    python bench/ingest.py                    # the real DFDC clips in ../shared/data/dfdc_sample
    python bench/ingest.py --data DIR --copies 12 --reps 3

Everything runs single-threaded in this process and is measured in CPU seconds per video
(``time.process_time``: user + sys of every thread), which a shared machine disturbs far less
than wall-clock time. Every number is a median over ``--reps``.

- ``full``    (limit a) PyAV decode of every video frame + every audio frame, no conversion.
- ``nonref``  (limit n) the same with ``skip_frame="NONREF"``: every reference frame and no
              other. Bit-exact on the frames it keeps, and the floor for any exact sampler.
- ``bidir``   ``skip_frame="BIDIR"``, shown for history only: it is NOT a correct decode (DFDC's
              B-pyramid uses B-frames as references; docs/ingest.md).
- ``avff``    ``tasks.ingest.write_unit.process_unit`` (the public unit of ingest work: probe, audio + mel,
              exact frame sampling, face detection and tracking, crops, JPEG, tar) with one face
              detector, as a Ray worker holds it. Its cost per video is the marginal cost: a
              unit of ``--copies`` copies of every clip minus a unit of one copy, divided by the
              extra videos, so start-up (detector graphs, imports) is not counted.

Stage CPU seconds come from the unit record (``videos[i]["cpu_seconds"]``); ``encode+write``
(JPEG, npy, tar) is the marginal total minus the stages. Results go to bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av

from storage.shard_schema import REAL
from tasks.ingest.faces import FaceDetector
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, process_unit

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfdc_sample"


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


def _unit(videos: list[Path], copies: int, out: Path, tag: str) -> WorkUnit:
    entries = tuple(
        UnitVideo(video_id=f"{p.stem}_{k:02d}", path=str(p), rel_path=p.name, part="bench", label=REAL,
                  split="train", group=f"{p.stem}_{k:02d}", original=None, fingerprint=fingerprint(str(p)))
        for k in range(copies) for p in videos
    )  # fmt: skip
    return WorkUnit("train", "bench", 0, str(out / f"{tag}.tar"), entries)


def avff_unit(videos: list[Path], copies: int, cfg: PreprocessConfig, detector: FaceDetector) -> tuple[float, dict]:
    """(CPU seconds for a fresh unit of copies x videos, summed per-stage CPU seconds)."""
    with tempfile.TemporaryDirectory(prefix="avff-bench-") as tmp:
        unit = _unit(videos, copies, Path(tmp), f"c{copies}")
        t0 = time.process_time()
        record = process_unit(unit, cfg, detector=detector)
        cpu = time.process_time() - t0
    if record.quarantined:
        raise SystemExit(f"bench videos were refused: {record.quarantined}")
    stages: dict[str, float] = {}
    for v in record.videos:
        for name, s in v["cpu_seconds"].items():
            stages[name] = stages.get(name, 0.0) + s
    return cpu, stages


def run(videos: list[Path], copies: int, reps: int) -> dict:
    cfg = PreprocessConfig()
    limits = {name: [] for name in ("full", "nonref", "bidir")}
    avff, stage_runs = [], []
    with face_detector(cfg) as detector:
        avff_unit(videos[:1], 1, cfg, detector)  # warm-up: graphs, imports, page cache
        for _ in range(reps):
            for name, skip in (("full", None), ("nonref", "NONREF"), ("bidir", "BIDIR")):
                limits[name].append(sum(decode_limit(str(p), skip) for p in videos) / len(videos))
            one, s1 = avff_unit(videos, 1, cfg, detector)
            many, sk = avff_unit(videos, copies, cfg, detector)
            extra = len(videos) * (copies - 1)
            avff.append((many - one) / extra)
            stage_runs.append({k: (sk[k] - s1.get(k, 0.0)) / extra for k in sk})
    med = {k: statistics.median(v) for k, v in limits.items()}
    med["avff"] = statistics.median(avff)
    stages = {k: statistics.median(r[k] for r in stage_runs) for k in stage_runs[0]}
    stages["encode+write"] = med["avff"] - sum(stages.values())
    decode = stages["decode"]
    return {
        "videos": [p.name for p in videos],
        "copies": copies,
        "reps": reps,
        "cpu_s_per_video": med,
        "avff_stages_cpu_s": stages,
        "ratios": {
            "avff_over_nonref": med["avff"] / med["nonref"],
            "avff_over_full": med["avff"] / med["full"],
            "after_decode_over_decode": (med["avff"] - decode) / decode,
        },
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }


def print_table(r: dict) -> None:
    c, s, q = r["cpu_s_per_video"], r["avff_stages_cpu_s"], r["ratios"]
    print(f"{len(r['videos'])} videos x {r['copies']} copies, median of {r['reps']}; CPU seconds per video")
    print(f"{'variant':<34}{'CPU s':>8}{'avff / it':>11}")
    rows = [("full decode (limit a)", "full"), ("reference-only decode (limit n)", "nonref"),
            ("BIDIR skip (INCORRECT, history)", "bidir"), ("avff", "avff")]  # fmt: skip
    for label, key in rows:
        print(f"{label:<34}{c[key]:>8.3f}{c['avff'] / c[key]:>10.2f}x")
    print("avff stages: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()))
    print(f"everything after the video decode costs {q['after_decode_over_decode']:.0%} of it")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED, help="folder of .mp4 files (default: the real DFDC sample)")
    ap.add_argument("--copies", type=int, default=12, help="copies of every video in the big unit (>= 2)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    videos = sorted(args.data.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no .mp4 under {args.data} (pass --data DIR)")
    if args.copies < 2:
        raise SystemExit("--copies must be >= 2 (the marginal cost needs two unit sizes)")
    result = run(videos, args.copies, args.reps)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
