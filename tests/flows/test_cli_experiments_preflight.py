"""avff cv / ablate refuse folds and variants that cannot work before any flow run: one line, exit status 2."""

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.preflight import MANIFEST
from storage.tables import SCHEMAS, ManifestRow


def _avff(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def _refused(tmp_path, out: subprocess.CompletedProcess, command: str, phrase: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"avff {command}: error: ") and phrase in out.stderr, out.stderr
    assert not list((tmp_path / "prefect-home").glob("*.db"))  # no Prefect server, so no flow run
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "o").exists()


@pytest.fixture
def shards(tmp_path):
    """A manifest of 8 ingested train/val videos in folds 0 and 1 (one group each)."""
    rows = [{"video_id": f"v{i}", "label": "FAKE" if i % 2 else "REAL", "split": "train" if i < 6 else "val",
             "fold": i % 2, "group": f"g{i}", "status": "ingested"} for i in range(8)]  # fmt: skip
    (tmp_path / "shards").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[ManifestRow]), tmp_path / "shards" / MANIFEST)
    return str(tmp_path / "shards")


def test_cv_refuses_an_unknown_fold(tmp_path, shards):
    out = _avff(tmp_path, "cv", "--data", shards, "--out", str(tmp_path / "o"), "--folds", "0", "7")
    _refused(tmp_path, out, "cv", "fold 7")


@pytest.mark.parametrize(
    ("variants", "phrase"),
    [
        ([], "give at least one --variant NAME=JSON or --variants-file"),
        (["--variant", "short={epochs: 1}"], "--variant: short: not JSON"),  # while parsing
        (["--variant", 'neg={"epochs": -1}'], "epochs"),
        (["--variant", 'moved={"seed": 3}'], "may not override ['seed']"),
    ],
)
def test_ablate_refuses_a_variant_that_cannot_work(tmp_path, shards, variants, phrase):
    out = _avff(tmp_path, "ablate", "--data", shards, "--out", str(tmp_path / "o"), *variants)
    _refused(tmp_path, out, "ablate", phrase)
