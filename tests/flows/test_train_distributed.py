"""train-avff's data-parallel launch paths on CPU: Ray Train's TorchTrainer on a real Ray head."""

from __future__ import annotations

import functools
import math

import pytest

from flows.train_distributed import train_data_parallel
from tasks.synthetic.shards import write_synthetic_shards
from tasks.tracking.logger import JsonlLogger, read_jsonl_metrics
from tasks.train.run import run_training
from tasks.train.settings import TrainSettings

pytestmark = pytest.mark.slow  # every test here starts a Ray head


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data"))
    write_synthetic_shards(root)
    return root


def _settings(data: str, out, **kw) -> TrainSettings:
    base = dict(data=data, output_dir=str(out), overrides={"num_slices": 2}, stages="classify", epochs=1,
                batch_size=16, lr=1e-3, seed=0, device="cpu", precision="fp32", shuffle_buffer=0, dropout=0.0,
                report_bootstrap=10, log_checkpoints=False, num_workers=0)  # fmt: skip
    return TrainSettings(**{**base, **kw})


def test_ray_train_with_two_workers_trains_like_one_process(ray_address, data, tmp_path):
    ref_log = JsonlLogger(path=str(tmp_path / "ref.jsonl"))
    ref = run_training(_settings(data, tmp_path / "ref"), log=ref_log)
    res = train_data_parallel(_settings(data, tmp_path / "ray", batch_size=8, world_size=2, ray_address=ray_address),
                              make_log=functools.partial(JsonlLogger, path=str(tmp_path / "ray.jsonl")))  # fmt: skip
    a = read_jsonl_metrics(ref_log.path)["train_step_loss"]
    b = read_jsonl_metrics(str(tmp_path / "ray.jsonl"))["train_step_loss"]
    assert len(a) == len(b) == 2
    assert all(math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) for (_, x), (_, y) in zip(a, b)), (a, b)
    assert math.isclose(ref.history[0]["val_loss"], res.history[0]["val_loss"], rel_tol=1e-4)
    assert res.test_metrics and res.report_path
