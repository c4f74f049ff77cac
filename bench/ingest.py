"""What ``avff ingest`` costs per video, beside two decode limits and a naive pipeline, broken into stages.

    python bench/ingest.py                       # the real DFDC clips in ../shared/data/dfdc_sample
    python bench/ingest.py --copies 12 --reps 3 --ray-workers 1 2 --crop landmarks

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
stage), then ``unit`` (a shard's own work: open, publish, sha256, record), ``flow`` (the CLI's
own process outside its units: Prefect's flow and task runs, logging, artifacts, planning, the
manifest) and ``server`` (its child processes: the temporary Prefect server). The child reports
its own CPU at exit (``getrusage(RUSAGE_SELF)``, after the server is stopped), so ``flow`` and
``server`` are measured, not guessed. The rows add up to the ``cli`` number by construction.
``--crop landmarks`` adds a row for the command with landmark crops (every face is on by default).

``--ray-workers``: the same command with ``--executor ray --num-workers W`` (wall time; efficiency
per worker = rate(W) / (W x rate(1))). Ray's raylet and workers are not all children the CLI
waits for, so their CPU is not fully in getrusage: the table shows wall rates only, and splits the
workers' phase efficiency into the units' CPU x their share of a core x the workers' occupancy
(:func:`fanout_factors`), which says whether a second worker loses to other processes or to waiting.
Results go to bench/results/ingest.json, rewritten after every repetition.
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
from tasks.ingest.video import keep_frame_memory
from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, process_unit

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfdc_sample"
REPO = Path(__file__).resolve().parents[1]
UNIT, FLOW, SERVER = "unit", "flow", "server"
ORCHESTRATION = (FLOW, SERVER)  # what the command adds around its units
BREAKDOWN = (*NAMES, OTHER, UNIT, *ORCHESTRATION)  # the rows of the cli breakdown, pipeline order
# runs the CLI and, last of all at exit (after the temporary server is stopped), writes its own CPU
_CHILD = """import atexit, json, resource, runpy, sys
out = sys.argv.pop(1)
def _report():
    r = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as f:
        json.dump({"self_cpu": r.ru_utime + r.ru_stime}, f)
atexit.register(_report)
sys.argv[0] = "avff"
runpy.run_module("flows.cli", run_name="__main__")
"""


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
    report = out.with_suffix(".cpu.json")
    args = ["ingest", "--data", str(data), "--out", str(out), *flags]
    cmd = [sys.executable, "-c", _CHILD, str(report), *args]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true"}
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"avff {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    records = read_records(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu": cpu, "self_cpu": json.loads(report.read_text())["self_cpu"], "wall": wall, "records": records}


def breakdown(run: dict) -> dict[str, float]:
    """A CLI run's CPU seconds split into BREAKDOWN rows (summed over its videos); they add up to run["cpu"].

    run: "cpu" (the command and its children), "self_cpu" (the command's own process), "records"."""
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
    rows[FLOW] = run["self_cpu"] - units
    rows[SERVER] = run["cpu"] - run["self_cpu"]
    return rows


def videos_in(run: dict) -> int:
    return sum(len(r["videos"]) for r in run["records"])


# --------------------------------------------------------------------------- the run


VARIANTS = ("full", "nonref", "naive", "process_unit", "cli")


def run(videos: list[Path], copies: int, reps: int, ray_workers: list[int], crops: list[str], save,
        only: tuple[str, ...] = VARIANTS) -> dict:  # fmt: skip
    """The variants in ``only`` (+ the command per crop) ``reps`` times (the Ray table after the
    first); ``save(result)`` after every repetition."""
    cfg = PreprocessConfig()
    variants = [*(v for v in VARIANTS if v in only), *(f"cli_{c}" for c in crops)]
    per: dict[str, list[float]] = {k: [] for k in variants}
    stage_runs: dict[str, list[dict[str, float]]] = {k: [] for k in variants if k.startswith("cli")}
    result: dict = {}
    fanout: list[dict] = []
    cli_runs: list[dict] = []  # every command run's totals, to see what the marginal hides
    with tempfile.TemporaryDirectory(prefix="avff-bench-ingest-") as tmp:
        root = Path(tmp)
        one, many = make_copies(videos, 1, root / "one"), make_copies(videos, copies, root / "many")
        with face_detector(cfg) as detector:
            if "process_unit" in per:
                keep_frame_memory()  # as flows.ingest.UnitWorker sets up its process (naive runs here too)
            if "process_unit" in per or "naive" in per:
                unit_cpu(videos, 1, cfg, detector)  # warm-up: graphs, imports, page cache
            for _ in range(reps):
                if "full" in per:
                    per["full"].append(statistics.fmean(decode_limit(str(p), None) for p in videos))
                if "nonref" in per:
                    per["nonref"].append(statistics.fmean(decode_limit(str(p), "NONREF") for p in videos))
                if "naive" in per:
                    per["naive"].append(statistics.fmean(naive(str(p), detector, cfg) for p in videos))
                if "process_unit" in per:
                    extra = len(videos) * (copies - 1)
                    cpu = unit_cpu(videos, copies, cfg, detector) - unit_cpu(videos, 1, cfg, detector)
                    per["process_unit"].append(cpu / extra)
                for key in stage_runs:
                    flags = ("--executor", "local", *(("--crop", key[4:]) if key != "cli" else ()))
                    small, big = (cli_ingest(d, root / "out", *flags) for d in (one, many))
                    extra = videos_in(big) - videos_in(small)
                    per[key].append((big["cpu"] - small["cpu"]) / extra)
                    b1, bn = breakdown(small), breakdown(big)
                    stage_runs[key].append({k: (bn[k] - b1[k]) / extra for k in BREAKDOWN})
                    cli_runs.append({"variant": key, **_run_facts(small, "one"), **_run_facts(big, "many")})
                if ray_workers and not fanout:  # after the first repetition: a long run still gets its table
                    fanout = ray_table(one, many, root / "ray", ray_workers, len(videos) * copies)
                result = _summary(videos, copies, per, stage_runs, fanout, cli_runs)
                save(result)
    return result


def _ratios(med: dict[str, float], stages: dict[str, dict[str, float]]) -> dict[str, float]:
    """The command over the limits and baselines measured in this run, and orchestration's share."""
    out = {
        f"{k}_over_{base}": med[k] / med[base] for k in stages for base in ("nonref", "full", "naive") if base in med
    }
    if "process_unit" in med and "cli" in med:
        out["process_unit_over_cli"] = med["process_unit"] / med["cli"]
    if "cli" in stages:
        out["orchestration_share"] = sum(stages["cli"][k] for k in ORCHESTRATION) / med["cli"]
    return out


def _run_facts(run: dict, name: str) -> dict:
    """A CLI run's totals: its videos, CPU (all), its own process's CPU, its children's, wall."""
    return {f"{name}_{k}": round(v, 3) for k, v in (("videos", videos_in(run)), ("cpu", run["cpu"]),
            ("self_cpu", run["self_cpu"]), ("server_cpu", run["cpu"] - run["self_cpu"]), ("wall", run["wall"]))}  # fmt: skip


def _summary(
    videos: list[Path], copies: int, per: dict, stage_runs: dict, fanout: list[dict], cli_runs: list[dict]
) -> dict:
    med = {k: statistics.median(v) for k, v in per.items()}
    stages = {key: {k: statistics.median(r[k] for r in runs) for k in BREAKDOWN} for key, runs in stage_runs.items()}
    ranges = {k: [min(v), max(v)] for k, v in per.items()}
    return {
        "videos": [p.name for p in videos],
        "copies": copies,
        "reps": max(len(v) for v in per.values()),
        "cpu_s_per_video": med,
        "cpu_s_per_video_range": ranges,
        "cpu_s_per_video_runs": per,
        "cli_stages_cpu_s": stages.get("cli", {}),
        "cli_stages_cpu_s_runs": stage_runs,
        "stages_by_variant": stages,
        "ratios": _ratios(med, stages),
        "ray_fanout": fanout,
        "cli_runs": cli_runs,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },  # fmt: skip
    }


def read_records(out: Path) -> list[dict]:
    """The shard records under ``out``, each with "_span": (start, end) of its unit, wall clock. A record is
    written when its shard is done, so its file's time is the unit's end; the end minus its seconds, the start."""
    records = []
    for path in sorted(out.rglob("*.tar.json")):
        rec, end = json.loads(path.read_text()), path.stat().st_mtime
        records.append({**rec, "_span": (end - rec["seconds"], end)})
    return records


def fanout_wall(run: dict) -> float:
    """Wall seconds from the first unit's start to the last unit's end (the workers' own phase: no start-up)."""
    spans = [rec["_span"] for rec in run["records"]]
    return max(end for _, end in spans) - min(start for start, _ in spans)


def fanout_factors(run: dict, workers: int) -> dict[str, float]:
    """What the workers' phase is made of: the units' CPU seconds ("unit_cpu_s"), the share of their wall time
    they got a core ("share": CPU over wall, summed over units; below 1, something else ran on their cores),
    and how full the W workers were over the phase ("occupancy": the units' wall seconds over W x the phase;
    below 1, a worker waited between units). phase = unit_cpu_s / (share x W x occupancy), so the phase
    efficiency of W workers against 1 is exactly the product of :func:`efficiency_factors`."""
    unit_cpu = sum(rec["cpu_seconds"] for rec in run["records"])
    unit_wall = sum(rec["seconds"] for rec in run["records"])
    return {
        "unit_cpu_s": unit_cpu,
        "share": unit_cpu / unit_wall,
        "occupancy": unit_wall / (workers * fanout_wall(run)),
    }


def efficiency_factors(one: dict, many: dict) -> dict[str, float]:
    """Two :func:`fanout_factors` rows (1 worker, W workers, the same videos) -> the phase efficiency's factors:
    "cpu" (the units' CPU for 1 worker over that for W: above 1 would be a saving), "share" and "occupancy"
    (W's over 1's)."""
    return {"cpu": one["unit_cpu_s"] / many["unit_cpu_s"], "share": many["share"] / one["share"],
            "occupancy": many["occupancy"] / one["occupancy"]}  # fmt: skip


def ray_table(one: Path, many: Path, out: Path, workers: list[int], n_videos: int) -> list[dict]:
    """Wall-clock rate of ``avff ingest --executor ray`` with W workers (shards: 2 per worker of the largest W),
    whole and marginal: the command's fixed start (Ray, the temporary Prefect server, imports: ~50 s) is paid
    by one worker and by two alike, so efficiency is measured on the videos of ``many`` beyond ``one``."""
    per_shard = max(1, n_videos // (2 * max(workers)))
    rows = []
    for w in workers:
        flags = ("--executor", "ray", "--num-workers", str(w), "--videos-per-shard", str(per_shard))
        small, big = (cli_ingest(d, out, *flags) for d in (one, many))
        extra, phase = videos_in(big) - videos_in(small), fanout_wall(big)
        rows.append({"workers": w, "wall_s": big["wall"], "videos": videos_in(big),
                     "videos_per_s": videos_in(big) / big["wall"], "small_wall_s": small["wall"],
                     "marginal_videos_per_s": extra / (big["wall"] - small["wall"]),
                     "fanout_wall_s": phase, "fanout_videos_per_s": videos_in(big) / phase,
                     "cpu_s_seen": big["cpu"], "load_avg": os.getloadavg()[0], **fanout_factors(big, w)})  # fmt: skip
    for key in ("videos_per_s", "marginal_videos_per_s", "fanout_videos_per_s"):
        base = rows[0][key] / rows[0]["workers"]
        for row in rows:
            row[key.replace("videos_per_s", "efficiency")] = row[key] / (row["workers"] * base)
    for row in rows:
        row["factors"] = efficiency_factors(rows[0], row)
    return rows


def _process_worker(videos: list[Path], copies: int, start, out) -> None:
    """One of :func:`process_table`'s processes: warm up, wait for the others, then time its share."""
    cfg = PreprocessConfig()
    keep_frame_memory()
    with face_detector(cfg) as detector:
        unit_cpu(videos, 1, cfg, detector)  # warm-up: graphs, imports, page cache
        start.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        unit_cpu(videos, copies, cfg, detector)
        out.put((time.perf_counter() - t0, time.process_time() - c0))


def process_table(videos: list[Path], copies: int, workers: list[int]) -> list[dict]:
    """The machine's own ceiling for a fan-out, with no Ray, Prefect or shard index: W plain processes, each
    running ``process_unit`` on ``copies // W`` copies of every video once all are warm; rate = videos / the
    slowest one's wall, efficiency per worker = rate(W) / (W x rate(1))."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for w in workers:
        start, out = ctx.Barrier(w), ctx.Queue()
        procs = [ctx.Process(target=_process_worker, args=(videos, copies // w, start, out)) for _ in range(w)]
        for proc in procs:
            proc.start()
        walls, cpus = zip(*(out.get() for _ in procs))
        for proc in procs:
            proc.join()
        n = len(videos) * (copies // w) * w
        rows.append({"workers": w, "videos": n, "wall_s": max(walls), "videos_per_s": n / max(walls),
                     "cpu_s_per_video": sum(cpus) / n, "load_avg": os.getloadavg()[0]})  # fmt: skip
    base = rows[0]["videos_per_s"] / rows[0]["workers"]
    for row in rows:
        row["efficiency"] = row["videos_per_s"] / (row["workers"] * base)
    return rows


def print_table(r: dict) -> None:
    c, lo_hi, q = r["cpu_s_per_video"], r["cpu_s_per_video_range"], r["ratios"]
    print(f"{len(r['videos'])} videos x {r['copies']} copies, median [range] of {r['reps']}; CPU seconds per video "
          f"(load average {r['machine']['load_avg'][0]:.1f} on {r['machine']['cpus']} CPUs)")  # fmt: skip
    print(f"{'variant':<40}{'CPU s':>8}{'range':>16}{'cli / it':>10}")
    labels = {"full": "full decode (limit a)", "nonref": "reference-only decode (limit n)",
              "naive": "naive: all frames, detect every 6th", "process_unit": "process_unit in this process",
              "cli": "avff ingest --executor local"}  # fmt: skip
    for key in c:
        label = labels.get(key, f"avff ingest --executor local --crop {key[4:]}")
        lo, hi = lo_hi[key]
        ratio = f"{c['cli'] / c[key]:>9.2f}x" if "cli" in c else ""
        print(f"{label:<40}{c[key]:>8.3f}{f'{lo:.3f}-{hi:.3f}':>16}{ratio}")
    for key, s in r["stages_by_variant"].items():
        print(f"{key}: CPU s per video by stage (adds up to the command's number):")
        for name in BREAKDOWN:
            print(f"  {name:<16}{s[name]:>7.3f}  {s[name] / c[key]:>5.1%}")
        print(f"  {'total':<16}{sum(s.values()):>7.3f}")
    if "orchestration_share" in q:
        print(f"orchestration (flow + server) share of the command: {q['orchestration_share']:.1%}")
    for row in r["ray_fanout"]:
        print(f"ray, {row['workers']} worker(s): {row['videos']} videos in {row['wall_s']:.1f} s wall, "
              f"{row['videos_per_s']:.3f} videos/s, efficiency per worker {row['efficiency']:.2f}; marginal "
              f"(beyond the {row['small_wall_s']:.1f} s run of the first copies) {row['marginal_videos_per_s']:.3f} "
              f"videos/s, efficiency {row['marginal_efficiency']:.2f}; the workers' own phase (first unit's start "
              f"to last unit's end) {row['fanout_wall_s']:.1f} s, efficiency {row['fanout_efficiency']:.2f}")  # fmt: skip
        if "factors" in row:
            f = row["factors"]
            print(f"  = units' CPU {f['cpu']:.2f} x their share of a core {f['share']:.2f} (CPU/wall "
                  f"{row['share']:.2f}) x workers' occupancy {f['occupancy']:.2f} ({row['occupancy']:.2f})")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED, help="folder of .mp4 files (default: the real DFDC sample)")
    ap.add_argument("--copies", type=int, default=12, help="copies of every video in the big run (>= 2)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2], help="Ray fan-out rows (none: skip)")
    ap.add_argument("--only", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="variants to run")
    ap.add_argument("--crop", nargs="*", default=[], choices=["landmarks"], help="also the command with this crop")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--process-workers", type=int, nargs="+", help="only the ceiling of a fan-out: W plain "
                    "processes, no Ray or Prefect (process_table), written to --out")  # fmt: skip
    args = ap.parse_args(argv)
    videos = sorted(args.data.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no .mp4 under {args.data} (pass --data DIR)")
    if args.copies < 2:
        raise SystemExit("--copies must be >= 2 (the marginal cost needs two run sizes)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.process_workers:
        rows = process_table(videos, args.copies, sorted(set(args.process_workers)))
        for row in rows:
            print(f"{row['workers']} plain process(es): {row['videos']} videos in {row['wall_s']:.1f} s wall, "
                  f"{row['videos_per_s']:.3f} videos/s, efficiency per worker {row['efficiency']:.2f}")  # fmt: skip
        args.out.write_text(json.dumps({"process_fanout": rows, "copies": args.copies, "videos": [p.name for p in videos],
                                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=2) + "\n")  # fmt: skip
        return

    def save(result: dict) -> None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print_table(result)
        print(f"wrote {args.out}", flush=True)

    run(videos, args.copies, args.reps, sorted(set(args.ray_workers)), args.crop, save, tuple(args.only))


if __name__ == "__main__":
    main()
