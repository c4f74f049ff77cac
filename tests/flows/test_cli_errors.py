"""Bad training inputs fail before any run starts: one line on stderr, exit status 2, no runs anywhere."""

import os
import subprocess
import sys
import time

import pytest

from flows.preflight import MANIFEST, ConfigError, model_presets


def _avff(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})})  # fmt: skip
    return out, time.perf_counter() - t0


@pytest.fixture
def shards_dir(tmp_path):
    """A folder that passes the cheap check (it holds a manifest); nothing may ever read it."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / MANIFEST).write_bytes(b"")
    return tmp_path / "shards"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "-3"], "avff train: error: argument --epochs: must be >= 0, got -3"),
        (
            ["--model", "huge"],
            "avff train: error: argument --model: unknown model preset 'huge'; known: laptop, paper, tiny",
        ),
        (["--batch-size", "two"], "avff train: error: argument --batch-size: 'two' is not an integer"),
    ],
)
def test_bad_flags_fail_while_parsing(shards_dir, tmp_path, flags, message):
    db = tmp_path / "mlflow.db"
    out, seconds = _avff("train", "--data", str(shards_dir), "--out", str(tmp_path / "o"), *flags,
                         env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"})  # fmt: skip
    assert out.returncode == 2 and out.stderr == message + "\n" and out.stdout == ""
    # why it is quick (~0.3 s on an idle 2-core box), without timing a shared machine: no flow, torch or mlflow import
    probe = (
        "import sys\nfrom flows.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('flows.train', 'torch', 'mlflow') if m in sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", probe, "train", "--data", str(shards_dir), "--out",
                               str(tmp_path / "o"), *flags], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert imported.stdout.strip() == "[]", imported.stdout + imported.stderr
    assert not db.exists() and not (tmp_path / "o").exists()  # nothing started


def test_data_without_manifest_says_to_ingest_first(tmp_path):
    out, _ = _avff("train", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert (
        f"holds no {MANIFEST}" in out.stderr
        and f"run `avff ingest --data <videos> --out {tmp_path}` first" in out.stderr
    )


def test_a_config_error_found_by_validation_is_one_line_too(shards_dir, tmp_path):
    out, _ = _avff("train", "--data", str(shards_dir), "--out", str(tmp_path / "o"), "--monitor", "val_video_auroc")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("avff train: error: --monitor: unknown monitor 'val_video_auroc'")


@pytest.mark.slow  # starts a Prefect server
def test_the_flow_refuses_before_opening_an_mlflow_run(prefect_server, tmp_path):
    import mlflow

    from flows.train import train_avff
    from tasks.train.settings import TrainSettings

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = TrainSettings(data=str(tmp_path / "nowhere"), output_dir=str(tmp_path / "o"), tracking_uri=uri)
    with pytest.raises(ConfigError, match="run `avff ingest"):
        train_avff(config)
    client = mlflow.MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_the_fast_checks_agree_with_the_real_registries(tmp_path):
    from avff_model import list_configs
    from storage import fs

    assert model_presets() == list_configs()
    assert fs.IngestLayout(str(tmp_path)).manifest.endswith("/" + MANIFEST)


def test_an_empty_split_is_refused_before_any_run(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from storage.tables import SCHEMAS, ManifestRow

    rows = [{"video_id": f"v{i}", "label": "FAKE" if i % 2 else "REAL", "split": "train", "status": "ingested"}
            for i in range(4)] + [{"video_id": "q", "label": "REAL", "split": "val", "status": "quarantined"}]  # fmt: skip
    (tmp_path / "shards").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[ManifestRow]), tmp_path / "shards" / MANIFEST)
    out, _ = _avff("train", "--data", str(tmp_path / "shards"), "--out", str(tmp_path / "o"),
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert (
        "no ingested video in the val and test split of" in out.stderr
        and "(train 4, val 0, test 0 videos)" in out.stderr
    )
    assert not (tmp_path / "mlflow.db").exists()
