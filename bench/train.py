"""Training throughput: the data loader alone, the model step alone, and real training.

    python bench/train.py                          # tiny on CPU (+ laptop, paper on a GPU); 10 min on a shared 2-core box
    python bench/train.py --shards DIR --configs tiny,laptop --batch 32 --reps 5

Shards: ``--shards DIR`` (an ingest output: shards.parquet, manifest.parquet, shards/), else
made once by the project's generator (``tasks.synthetic.dfdc_sample.make_dfdc_sample``, 10 s clips with
3 face clips each) and ingest's plain functions (``tasks.ingest.units`` + ``tasks.ingest.write_unit.process_unit``,
the body of the ``ingest-dfdc`` flow without Prefect), cached under
``$TMPDIR/avff-bench-train-shards`` for the next run.

Measured, each a median over ``--reps`` repetitions run in turn (loader, stage-2 step,
stage-1 step, real stage 2, real stage 1), so drift on a shared machine hits them alike:

- ``loader``    samples/s of ``tasks.train.data.make_loader`` over the train split (JPEG decode,
                normalisation, shuffle, batching), 0 and ``os.cpu_count()`` worker processes;
                steady state after the first batch (worker start-up reported on its own).
- ``step``      samples/s of ``train_one_epoch`` (stage 2: BCE, classifier params) and
                ``pretrain_one_epoch`` (stage 1: AVFF's generator + discriminator losses and two
                optimizers) fed a list of identical synthetic batches already in memory: model
                forward, backward, clipping, optimizer step, no input pipeline at all.
- ``train``     the same two engine functions fed by the real loader (stage 1 reads REAL clips only).

The model config is the named preset with the shards' clip shape applied, exactly as
``tasks.train.run`` resolves it: the preset keeps its image size and the loader shrinks the
224 px crops to it (``tiny``: 64 px), as a training run does; the loader is measured at each
config's size. Targets: loader/step
>= 2 for each stage. On CUDA also peak memory (``torch.cuda.max_memory_allocated``) and GPU
utilisation / memory sampled by ``nvidia-smi`` every 200 ms during real training. The epoch
estimate is for the 400-video DFDC sample, 1200 clips, at the measured real-training rate plus
one loader start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
EPOCH_CLIPS = 1200  # the 400-video DFDC sample, 3 clips each


class NullLog:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass


# ---------------------------------------------------------------- shards


def make_shards(root: Path, n_real: int = 12, size: tuple[int, int] = (256, 256), videos_per_shard: int = 4) -> Path:
    """Generated sample -> ingest (plain functions, in-process); returns the ingest output root."""
    from tasks.ingest.settings import IngestSettings
    from storage import fs
    from tasks.ingest import units as steps
    from tasks.ingest.preprocess import face_detector
    from storage.manipulations import MANIPULATIONS
    from tasks.synthetic.dfdc_sample import make_dfdc_sample
    from tasks.ingest.write_unit import process_unit

    data, out = root / "data", root / "out"
    if not (data / "dfdc_train_part_0").exists():
        # 3 fakes per real: 25 % REAL clips, near the DFDC sample's 19 % (stage 1 reads REAL only)
        make_dfdc_sample(
            data, n_real=n_real, parts=1, duration_s=10.0, size=size, seed=0, manipulations=MANIPULATIONS[:3]
        )
    cfg = IngestSettings(data=str(data), out=str(out), videos_per_shard=videos_per_shard)
    result = steps.scan(cfg.data)
    layout = fs.IngestLayout(cfg.out)
    units, planned = steps.plan(result, cfg.data, layout, ratios=cfg.ratios, folds=cfg.folds, seed=cfg.seed,
                                videos_per_shard=cfg.videos_per_shard)  # fmt: skip
    pre = cfg.preprocess
    with face_detector(pre) as det:
        records = [dataclasses.asdict(process_unit(u, pre, jpeg_quality=cfg.jpeg_quality, detector=det)) for u in units]
    manifest, shards, quarantine = steps.finalize(planned, records, result, [])
    steps.write_outputs(layout, manifest, shards, quarantine, {**cfg.model_dump(), "preprocess_hash": pre.hash()})
    return out


def ensure_shards(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    root = Path(tempfile.gettempdir()) / "avff-bench-train-shards"
    out = root / "out"
    if not (out / "shards.parquet").exists():
        print(f"making shards once under {root} (generator + ingest, a few minutes) ...", flush=True)
        make_shards(root)
    return out


# ---------------------------------------------------------------- timing helpers


class Stamped:
    """Wrap a loader: remember when each batch was handed out (the first one includes start-up)."""

    def __init__(self, loader: Iterable[dict]):
        self.loader = loader
        self.stamps: list[float] = []
        self.sizes: list[int] = []

    def __iter__(self) -> Iterator[dict]:
        t0 = time.perf_counter()
        self.stamps = [t0]
        for batch in self.loader:
            self.stamps.append(time.perf_counter())
            self.sizes.append(len(batch["target"]))
            yield batch

    def rate(self) -> tuple[float, float]:
        """(steady samples/s after the first batch, seconds to the first batch)."""
        if len(self.sizes) < 2:
            raise ValueError("need at least two batches")
        steady = sum(self.sizes[1:]) / (self.stamps[-1] - self.stamps[1])
        return steady, self.stamps[1] - self.stamps[0]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GpuSampler:
    """nvidia-smi utilisation and memory of the training GPU every interval_ms, in the background."""

    def __init__(self, device, interval_ms: int = 200):
        import torch

        try:  # rows of other GPUs are dropped by UUID; without one (old torch) every row counts
            uuid = str(torch.cuda.get_device_properties(device).uuid).removeprefix("GPU-")
        except Exception:
            uuid = None
        self.uuid = uuid
        cmd = ["nvidia-smi", "--query-gpu=uuid,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
               f"-lms={interval_ms}"]  # fmt: skip
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None

    def stop(self) -> dict | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        rows = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[1].replace(".", "").isdigit() and parts[2].replace(".", "").isdigit():
                rows.append((parts[0].removeprefix("GPU-"), float(parts[1]), float(parts[2])))
        mine = [r for r in rows if r[0] == self.uuid] or rows
        if not mine:
            return None
        util, mem = [r[1] for r in mine], [r[2] for r in mine]
        return {"samples": len(util), "util_mean_pct": statistics.mean(util), "util_median_pct": statistics.median(util),
                "mem_max_mib": max(mem)}  # fmt: skip


# ---------------------------------------------------------------- measurements


def loader_rate(layout, batch: int, workers: int, batches: int, seed: int, real_only: bool = False,
                img_size: int | None = None) -> dict:  # fmt: skip
    from tasks.train.data import make_loader

    loader = Stamped(make_loader(layout, "train", batch_size=batch, num_workers=workers, samples_per_epoch=batch * batches,
                                 seed=seed, epoch=seed, pin_memory=False, real_only=real_only, img_size=img_size))  # fmt: skip
    for _ in loader:
        pass
    steady, first = loader.rate()
    return {"samples_per_s": steady, "first_batch_s": first}


def loader_stage_costs(layout, clips: int = 32, reps: int = 3) -> dict:
    """Milliseconds per clip, in this process, of the loader's per-sample stages (interleaved reps):
    tar read + JPEG/npy decode (``decode_sample``), float32 normalisation (``clip_to_tensors``), the
    same clip kept uint8 (what a loader that normalises on the device would do), and collation."""
    import torch

    from storage.shard_schema import decode_sample
    from storage.shard_io import read_samples
    from avff_model.inputs import clip_to_tensors
    from tasks.train.data import collate, shard_urls

    raw = []
    for url in shard_urls(layout, "train"):
        raw += list(read_samples(url))
        if len(raw) >= clips:
            break
    raw = raw[:clips]
    times: dict[str, list[float]] = {"decode_sample": [], "clip_to_tensors": [], "uint8_only": [], "collate": []}
    for _ in range(reps):
        t = time.perf_counter()
        decoded = [decode_sample(r) for r in raw]
        times["decode_sample"].append(time.perf_counter() - t)
        t = time.perf_counter()
        samples = [clip_to_tensors(c) for c in decoded]
        times["clip_to_tensors"].append(time.perf_counter() - t)
        t = time.perf_counter()
        [torch.from_numpy(c.frames).permute(3, 0, 1, 2) for c in decoded]  # (3, T, H, W) uint8 view
        times["uint8_only"].append(time.perf_counter() - t)
        t = time.perf_counter()
        collate(samples)
        times["collate"].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) / len(raw) for k, v in times.items()}


def synthetic_batch(shape, batch: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "video": torch.randn(
            batch, 3, shape.num_frames, shape.img_size, shape.img_size, generator=g
        ),  # (B, 3, T, H, W)
        "audio": torch.randn(batch, 1, shape.n_mels, shape.mel_frames, generator=g),  # (B, 1, F, Tm)
        "target": (torch.arange(batch) % 2).float(),  # (B,)
        "video_id": [f"v{i}" for i in range(batch)],
        "clip": torch.zeros(batch, dtype=torch.int64),
    }


class Trainer:
    """One model per config with its stage-1 and stage-2 optimizers; runs the engine's epochs."""

    def __init__(self, name: str, shape, device, precision: str, grad_checkpointing: bool = False):
        from avff_model import AVFF
        from tasks.train.device import make_scaler
        from tasks.train.engine import StepContext
        from tasks.train.optim import build_optimizer, param_groups
        from tasks.train.run import resolve_model_config

        self.cfg = resolve_model_config(name, {}, shape)
        self.device, self.precision = device, precision
        self.model = AVFF(self.cfg).to(device)
        self.model.set_grad_checkpointing(grad_checkpointing)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.cls_opt = build_optimizer(param_groups(self.model.classifier_parameters(), 0.05), "adamw", lr=1e-4)
        self.gen_opt = build_optimizer(param_groups(self.model.generator_parameters(), 0.05), "adamw", lr=1e-4)
        self.disc_opt = build_optimizer(param_groups(self.model.discriminator_parameters(), 0.05), "adamw", lr=1e-4)
        self.scaler = make_scaler(device, precision)
        self.ctx = lambda: StepContext(precision=precision, grad_clip=1.0, scaler=self.scaler)

    def run(self, stage: str, loader: Iterable[dict]) -> dict:
        from tasks.train.engine import pretrain_one_epoch, train_one_epoch

        if stage == "classify":
            return train_one_epoch(self.model, loader, self.cls_opt, device=self.device, log=NullLog(), ctx=self.ctx())
        return pretrain_one_epoch(self.model, loader, self.gen_opt, device=self.device, log=NullLog(),
                                  disc_optimizer=self.disc_opt, ctx=self.ctx())  # fmt: skip


def step_rate(trainer: Trainer, stage: str, batch: dict, steps: int) -> dict:
    """Synthetic batches already in memory (CPU tensors, moved by the engine like real ones).

    The trainer ran one warm-up step of each stage before the first measurement."""
    t0 = time.perf_counter()
    trainer.run(stage, [batch] * steps)
    _sync(trainer.device)
    return {"samples_per_s": steps * len(batch["target"]) / (time.perf_counter() - t0)}


def train_rate(trainer: Trainer, stage: str, layout, batch: int, workers: int, steps: int, seed: int) -> dict:
    import torch

    from tasks.train.data import make_loader

    loader = Stamped(make_loader(layout, "train", batch_size=batch, num_workers=workers, samples_per_epoch=batch * steps,
                                 real_only=stage == "pretrain", seed=seed, epoch=seed,
                                 pin_memory=trainer.device.type == "cuda", img_size=trainer.cfg.img_size))  # fmt: skip
    gpu = GpuSampler(trainer.device) if trainer.device.type == "cuda" else None
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
        resident = torch.cuda.memory_allocated(trainer.device)  # every config's weights + optimizer states
    trainer.run(stage, loader)
    _sync(trainer.device)
    end = time.perf_counter()
    # from the first batch's arrival to the end: every step, and the loads after the first
    out = {
        "samples_per_s": sum(loader.sizes) / (end - loader.stamps[1]),
        "first_batch_s": loader.stamps[1] - loader.stamps[0],
    }
    if gpu is not None:
        out["gpu"] = gpu.stop()
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**30
        out["peak_over_resident_gib"] = (torch.cuda.max_memory_allocated(trainer.device) - resident) / 2**30
    return out


# ---------------------------------------------------------------- main


def machine_info(device) -> dict:
    import torch

    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    info = {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from storage import fs
    from tasks.train.data import infer_input_shape, split_counts
    from tasks.train.device import resolve_device, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", help="an ingest output root (default: make once under $TMPDIR)")
    ap.add_argument("--configs", default=None, help="model presets (default: tiny on CPU; tiny,laptop,paper on CUDA)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--loader-batches", type=int, default=3, help="batches per loader measurement (first excluded)")
    ap.add_argument(
        "--steps", type=int, default=1, help="optimizer steps per step/train measurement (after one warm-up)"
    )
    ap.add_argument("--workers", default=None, help="loader worker counts (default: 0,os.cpu_count())")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--grad-checkpointing", action="store_true", help="activation checkpointing of every block")
    ap.add_argument(
        "--mem-budget-gib",
        type=float,
        default=8.0,
        help="on CUDA: the laptop preset's peak memory must stay under this (default: %(default)s, an 8 GB laptop GPU)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    configs = (
        args.configs.split(",")
        if args.configs
        else (["tiny", "laptop", "paper"] if device.type == "cuda" else ["tiny"])
    )
    worker_counts = (
        sorted({int(w) for w in args.workers.split(",")}) if args.workers else sorted({0, os.cpu_count() or 1})
    )
    root = ensure_shards(args.shards)
    layout = fs.IngestLayout(str(root))
    shape = infer_input_shape(layout)
    info = machine_info(device)
    info.update(shards=str(root), train_clips=split_counts(layout, "train"), clip_shape=dataclasses.asdict(shape))
    print(f"{info['device']} ({info.get('gpu', info['cpu_model'])}), torch threads {info['torch_threads']}, precision "
          f"{precision}; shards {root} ({info['train_clips']} train clips, {shape})", flush=True)  # fmt: skip

    stage_costs = loader_stage_costs(layout)
    print("loader stages, ms per clip: " + ", ".join(f"{k} {v:.1f}" for k, v in stage_costs.items()), flush=True)
    results = {}
    trainers = {name: Trainer(name, shape, device, precision, args.grad_checkpointing) for name in configs}
    sizes = sorted({tr.cfg.img_size for tr in trainers.values()})  # the loader shrinks frames to each model's size
    # (workers, REAL only: stage 1, frame size)
    loader_keys = [(w, False, px) for px in sizes for w in worker_counts] + [
        (max(worker_counts), True, px) for px in sizes
    ]
    loader_runs: dict[tuple[int, bool, int], list[dict]] = {k: [] for k in loader_keys}
    batches = {name: synthetic_batch(tr.cfg, args.batch) for name, tr in trainers.items()}  # the config's clip shape
    step_runs = {(n, s): [] for n in configs for s in ("classify", "pretrain")}
    train_runs = {(n, s): [] for n in configs for s in ("classify", "pretrain")}
    best_w = max(worker_counts)
    for name, tr in trainers.items():  # one warm-up step per stage: allocator, autotuning, lazy init
        for stage in ("classify", "pretrain"):
            try:
                tr.run(stage, [batches[name]])
            except torch.OutOfMemoryError:
                pass  # measured (and reported) as OOM below
    for rep in range(args.reps):
        for w, real, px in loader_keys:
            r = loader_rate(layout, args.batch, w, args.loader_batches, seed=rep, real_only=real, img_size=px)
            loader_runs[(w, real, px)].append(r)
            print(f"rep {rep} loader W={w} {px} px{' REAL only' if real else ''}: {r['samples_per_s']:.1f} samples/s "
                  f"(first batch {r['first_batch_s']:.1f}s)", flush=True)  # fmt: skip
        for name, tr in trainers.items():
            for stage in ("classify", "pretrain"):
                try:
                    r = step_rate(tr, stage, batches[name], args.steps)
                except torch.OutOfMemoryError as e:
                    r = {"samples_per_s": float("nan"), "error": f"OOM: {str(e).splitlines()[0]}"}
                step_runs[(name, stage)].append(r)
                print(f"rep {rep} step  {name} {stage}: {r['samples_per_s']:.2f} samples/s", flush=True)
                try:
                    r = train_rate(tr, stage, layout, args.batch, best_w, args.steps, seed=rep)
                except torch.OutOfMemoryError as e:
                    r = {
                        "samples_per_s": float("nan"),
                        "first_batch_s": float("nan"),
                        "error": f"OOM: {str(e).splitlines()[0]}",
                    }
                train_runs[(name, stage)].append(r)
                print(f"rep {rep} train {name} {stage}: {r['samples_per_s']:.2f} samples/s", flush=True)
    info["loadavg_end"] = os.getloadavg()

    loader = {k: {"workers": k[0], "real_only": k[1], "img_size": k[2], "samples_per_s": median_of(runs, "samples_per_s"),
                  "first_batch_s": median_of(runs, "first_batch_s"), "all": [r["samples_per_s"] for r in runs]}
              for k, runs in loader_runs.items()}  # fmt: skip
    # stage 2 reads every clip, stage 1 only REAL ones (decoded, then filtered): each stage's own loader
    checks = []
    for name, tr in trainers.items():
        px = tr.cfg.img_size
        stage_loader = {
            "classify": loader[(max(worker_counts), False, px)],
            "pretrain": loader[(max(worker_counts), True, px)],
        }
        row = {"params": tr.params, "model_config": dataclasses.asdict(tr.cfg)}
        for stage in ("classify", "pretrain"):
            st, tn = step_runs[(name, stage)], train_runs[(name, stage)]
            step_sps, train_sps = median_of(st, "samples_per_s"), median_of(tn, "samples_per_s")
            ratio = stage_loader[stage]["samples_per_s"] / step_sps
            epoch_s = EPOCH_CLIPS / train_sps + median_of(tn, "first_batch_s")
            row[stage] = {"step_samples_per_s": step_sps, "train_samples_per_s": train_sps, "loader_over_step": ratio,
                          "epoch_1200_clips_s": epoch_s, "step_all": [r["samples_per_s"] for r in st],
                          "train_all": [r["samples_per_s"] for r in tn]}  # fmt: skip
            gpus = [r["gpu"] for r in tn if r.get("gpu")]
            if gpus:
                row[stage]["gpu_util_median_pct"] = statistics.median(g["util_median_pct"] for g in gpus)
                row[stage]["gpu_mem_max_mib"] = max(g["mem_max_mib"] for g in gpus)
            if any("peak_mem_gib" in r for r in tn):
                row[stage]["peak_mem_gib"] = max(r.get("peak_mem_gib", 0.0) for r in tn)
                row[stage]["peak_over_resident_gib"] = max(r.get("peak_over_resident_gib", 0.0) for r in tn)
            errors = [r["error"] for r in st + tn if "error" in r]
            if errors:
                row[stage]["errors"] = errors
            checks.append({"target": f"loader >= 2x step ({name}, {stage})", "ratio": ratio, "need": ">= 2.0",
                           "pass": ratio >= 2.0})  # fmt: skip
            if name == "laptop" and "peak_mem_gib" in row[stage]:
                peak = row[stage]["peak_mem_gib"]
                checks.append({"target": f"laptop fits {args.mem_budget_gib:g} GiB at batch {args.batch} ({stage})",
                               "ratio": peak, "need": f"<= {args.mem_budget_gib:g}", "pass": peak <= args.mem_budget_gib})  # fmt: skip
        results[name] = row

    print(f"\n{info['device']}, {info['cpu_count']} cores ({info['cpu_model']}), load average {info['loadavg_start']} -> "
          f"{info['loadavg_end']}; batch {args.batch}, clip {shape.num_frames}x{shape.img_size}^2 + mel "
          f"{shape.n_mels}x{shape.mel_frames} in the shards, frames shrunk to {', '.join(f'{px}' for px in sizes)} px")  # fmt: skip
    print("loader stages, ms per clip (one process): " + ", ".join(f"{k} {v:.1f}" for k, v in stage_costs.items()))
    print("data loader (train split, samples/s after the first batch):")
    for (w, real, px), r in loader.items():
        what = "REAL clips only (stage 1)" if real else "all clips (stage 2)"
        print(
            f"  workers={w} {px:3d} px {what:26s}: {r['samples_per_s']:8.1f} samples/s   first batch {r['first_batch_s']:.1f}s"
        )
    head = f"{'config':8s} {'stage':9s} {'params':>8s} {'step/s':>9s} {'train/s':>9s} {'loader/step':>11s} {'epoch 1200 clips':>16s}"
    extra_gpu = device.type == "cuda"
    if extra_gpu:
        head += f" {'peak GiB':>8s} {'GPU util':>8s}"
    print("\nsamples/s (median): step = model alone on synthetic batches, train = engine fed by the loader")
    print(head + "\n" + "-" * len(head))
    for name, row in results.items():
        for stage in ("classify", "pretrain"):
            s = row[stage]
            line = (f"{name:8s} {stage:9s} {row['params'] / 1e6:7.1f}M {s['step_samples_per_s']:9.2f} "
                    f"{s['train_samples_per_s']:9.2f} {s['loader_over_step']:10.1f}x {s['epoch_1200_clips_s'] / 60:13.1f} min")  # fmt: skip
            if extra_gpu:
                line += (
                    f" {s.get('peak_mem_gib', float('nan')):8.1f} {s.get('gpu_util_median_pct', float('nan')):7.0f}%"
                )
            print(line)
    print("\ntargets:")
    for c in checks:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {c['ratio']:.1f} (need {c['need']})")
    result = {"command": "train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": info, "batch": args.batch, "reps": args.reps, "steps": args.steps, "precision": precision,
              "grad_checkpointing": args.grad_checkpointing,
              "loader": list(loader.values()), "loader_stage_ms_per_clip": stage_costs, "models": results, "targets": checks}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
