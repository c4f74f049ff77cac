"""Training reads what ingest writes: the shared ingest fixture's shards through run_training."""

from __future__ import annotations

import json

import pytest
import torch

from storage import fs
from tasks.ingest.preprocess import PreprocessConfig
from tasks.tracking.logger import InMemoryLogger
from tasks.train.data import infer_input_shape, make_loader
from tasks.train.run import run_training
from tasks.train.settings import TrainSettings

pytestmark = pytest.mark.slow  # needs the session's sample generation + ingest (about a minute)


def test_ingest_output_trains_with_the_tiny_preset(ingested, tmp_path):
    layout = fs.IngestLayout(str(ingested))
    ingest = json.loads(fs.read_bytes(layout.config))
    shape = infer_input_shape(layout)
    pre = ingest["preprocess"]
    assert shape.img_size == pre["face_size"] and shape.num_frames == pre["frames_per_clip"]
    batch = next(iter(make_loader(layout, "val", batch_size=4)))
    assert batch["video"].shape[1:] == (3, shape.num_frames, shape.img_size, shape.img_size)
    assert batch["audio"].shape[1:] == (1, shape.n_mels, shape.mel_frames)
    assert torch.isfinite(batch["audio"]).all() and batch["audio"].abs().mean() < 5  # normalised scale
    result = run_training(TrainSettings(data=str(ingested), output_dir=str(tmp_path), stages="classify", epochs=1,
                                        batch_size=8, device="cpu", report_bootstrap=20, num_workers=0), log=InMemoryLogger())  # fmt: skip
    assert result.report_path and "test_video_auc" in result.test_metrics
    # `avff predict --model <output_dir>/checkpoints/best.json` repeats the ingest's preprocessing (clip mode,
    # crop, rate), not the defaults matched to the input shape: a native-rate or landmark model needs it
    from tasks.serve.predict import preprocess_for
    from tasks.serve.scorer import load_model

    scorer = load_model(str(tmp_path / "checkpoints" / "best.json"), device="cpu")
    assert scorer.preprocess == ingest["preprocess"]
    assert preprocess_for(scorer).to_dict() == PreprocessConfig.from_dict(ingest["preprocess"]).to_dict()


def test_every_checkpoint_carries_the_ingests_preprocessing(ingested, tmp_path):
    """A CV fold's checkpoints (no report, no decision) and every epoch's, not the best one alone: a
    landmark model scored from one of them with the defaults' box crops sees no lips (bench/real.py --select)."""
    from tasks.serve.scorer import load_model

    ingest = json.loads(fs.read_bytes(fs.IngestLayout(str(ingested)).config))
    run_training(TrainSettings(data=str(ingested), output_dir=str(tmp_path), stages="classify", epochs=1, fold=0,
                               batch_size=8, device="cpu", report_bootstrap=20, num_workers=0), log=InMemoryLogger())  # fmt: skip
    epochs = sorted((tmp_path / "checkpoints").glob("epoch-*"))
    assert epochs
    for ckpt in epochs:
        assert load_model(str(ckpt), device="cpu").preprocess == ingest["preprocess"], ckpt.name
