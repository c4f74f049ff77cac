"""What measuring the hand-made statistics costs a training run's final evaluation pass.

    python bench/eval_statistics.py SHARDS_DIR [--preset tiny] [--repeats 5]

A run's last pass over val and test (:meth:`tasks.train.run.Run.score_best`) reads every clip once
for the model and, in the same pass, measures :data:`tasks.evaluate.handmade.STATISTICS` on it
(``make_loader(statistics=...)``). Timed here, best of ``--repeats``, one torch thread, in one
process: that pass with and without the statistics (``preset`` at the run's image size), and,
for comparison, a separate pass that decodes every clip again just to measure them.
"""

from __future__ import annotations

import argparse
import time

import torch

from avff_model import AVFF
from storage import fs
from storage.shard_io import read_clips
from tasks.evaluate.handmade import STATISTICS
from tasks.train.data import infer_input_shape, make_loader, shard_urls
from tasks.train.engine import evaluate
from tasks.train.run import resolve_model_config

SPLITS = ("val", "test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards", help="an ingest output (shards.parquet, manifest.parquet)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    layout = fs.IngestLayout(args.shards)
    shape = infer_input_shape(layout)
    cfg = resolve_model_config(args.preset, {}, shape)
    model = AVFF(cfg).eval()

    def final_pass(statistics) -> float:
        t = time.perf_counter()
        for split in SPLITS:
            loader = make_loader(layout, split, batch_size=8, img_size=cfg.img_size, statistics=statistics)
            evaluate(model, loader, device=torch.device("cpu"))
        return time.perf_counter() - t

    def separate_pass() -> float:
        t = time.perf_counter()
        for url in (u for split in SPLITS for u in shard_urls(layout, split)):
            for clip in read_clips(url):
                [fn(clip) for fn in STATISTICS.values()]
        return time.perf_counter() - t

    final_pass(STATISTICS)  # warm-up: imports, first allocations
    plain = min(final_pass(None) for _ in range(args.repeats))
    measured = min(final_pass(STATISTICS) for _ in range(args.repeats))
    separate = min(separate_pass() for _ in range(args.repeats))
    n = sum(1 for split in SPLITS for u in shard_urls(layout, split) for _ in read_clips(u))
    extra = measured - plain
    print(
        f"{n} val+test clips, {shape.img_size} px shards, {shape.num_frames} frames, `{args.preset}` at {cfg.img_size} px"
    )
    print(
        f"final pass: {plain:.3f} s; with the statistics {measured:.3f} s (+{extra:.3f} s, "
        f"+{100 * extra / plain:.0f} %, {1000 * extra / n:.1f} ms per clip)"
    )
    print(f"a separate pass instead (decode + statistics): {separate:.3f} s ({1000 * separate / n:.1f} ms per clip)")


if __name__ == "__main__":
    main()
