"""tasks.train.distributed's collectives on a real 2-process gloo group (no model, a few seconds)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.multiprocessing as mp

from tasks.train import distributed as D
from tasks.train.engine import Predictions


def _rank(rank: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2"})
    world = D.init_world("gloo", device="cpu", timeout_s=60, init_method=f"file://{out}/rendezvous")
    try:
        batches = [{"i": i} for i in range(3 + 2 * rank)]  # rank 0: 3 batches, rank 1: 5
        taken = [b["i"] for b in D.even_batches(batches)]
        weight = 2 if rank == 0 else 6
        mean, total = D.all_mean({"loss": torch.tensor(1.0 + rank), "acc": torch.tensor(float(rank))}, weight)
        mine = Predictions([f"v{rank}"], np.array([rank]), np.array([rank]), np.array([0.25 + rank / 2]))
        preds = D.gather_predictions(mine)
        record = {"world": [world.rank, world.world_size], "taken": taken, "mean": mean, "total": total,
                  "ids": preds.video_ids, "p": preds.p.tolist(), "same_rank": D.same_everywhere(float(rank)),
                  "same_one": D.same_everywhere(1.0)}  # fmt: skip
        with open(f"{out}/{rank}.json", "w") as f:
            json.dump(record, f)
    finally:
        D.close_world()


def test_even_batches_all_mean_and_gather_on_two_gloo_ranks(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path),), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == [0, 2] and r1["world"] == [1, 2]
    assert r0["taken"] == r1["taken"] == [0, 1, 2]  # the longer rank stops with the shorter: DDP never waits forever
    for r in (r0, r1):  # weighted by batch: (1*2 + 2*6) / 8 and (0*2 + 1*6) / 8
        assert r["mean"] == {"acc": 0.75, "loss": 1.75} and r["total"] == 8
        assert r["ids"] == ["v0", "v1"] and r["p"] == [0.25, 0.75]
        assert r["same_rank"] is False and r["same_one"] is True
    assert D.all_mean({"loss": torch.tensor(3.0)}, 4) == ({"loss": 3.0}, 4)  # one process: unchanged
    assert not D.World().distributed and D.current_world() == D.World()
