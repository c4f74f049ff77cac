"""`avff predict`: the registered model scores generated videos through ingest's exact code path."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds

from storage.shard_schema import decode_sample
from tasks.ingest.faces import FaceDetector
from tasks.serve.predict import clip_inputs, preprocess_for
from tasks.serve.scorer import load_model
from avff_model.inputs import clip_to_tensors

pytestmark = pytest.mark.slow  # every test here starts a Prefect server


def _scorer(trained):
    import mlflow

    mlflow.set_tracking_uri(trained["tracking_uri"])
    try:
        return load_model(f"models:/avff-dfdc/{trained['model_version']}", device="cpu")
    finally:
        mlflow.set_tracking_uri(None)


def test_train_serve_parity(trained, ingested, dfdc_sample):
    """The tensors predict builds from a video equal the ones training read from its shard."""
    scorer = _scorer(trained)
    pre = preprocess_for(scorer)
    assert pre.face_size == 64 and scorer.preprocess is not None  # the model carries ingest's config
    manifest = pq.read_table(ingested / "manifest.parquet").to_pylist()
    row = next(r for r in manifest if r["label"] == "FAKE" and r["status"] == "ingested")
    shard_clips = sorted(
        (
            decode_sample(s)
            for s in wds.WebDataset(row["shard"], shardshuffle=False)
            if s["__key__"].startswith(row["video_id"] + "/")
        ),
        key=lambda c: c.meta.clip,
    )
    with FaceDetector() as det:
        inputs, _ = clip_inputs(str(dfdc_sample / row["rel_path"]), pre, det)
    video, audio = inputs["video"], inputs["audio"]
    from_shard = [clip_to_tensors(c) for c in shard_clips]
    assert video.shape[0] == len(from_shard) == row["clips"]
    torch.testing.assert_close(video, torch.stack([s["video"] for s in from_shard]), rtol=0, atol=0)
    torch.testing.assert_close(audio, torch.stack([s["audio"] for s in from_shard]), rtol=0, atol=0)
    for k in ("mouth", "lips"):  # the sync branch's inputs too
        torch.testing.assert_close(inputs[k], torch.stack([s[k] for s in from_shard]), rtol=0, atol=0)


def test_predict_cli_scores_real_and_fake_and_explains_failures(trained, dfdc_sample, tmp_path):
    from tasks.synthetic.dfdc_sample import write_video

    meta = json.loads(next(dfdc_sample.rglob("metadata.json")).read_text())
    part = next(dfdc_sample.rglob("metadata.json")).parent
    real = next(part / n for n, e in meta.items() if e["label"] == "REAL")
    fake = next(part / n for n, e in meta.items() if e["label"] == "FAKE")
    silent = write_video(tmp_path / "no_audio.mp4", np.full((100, 64, 64, 3), 128, np.uint8), 25)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "predict",
            str(real),
            str(fake),
            str(silent),
            "--model",
            f"avff-dfdc@{trained['model_version']}",
            "--tracking-uri",
            trained["tracking_uri"],
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr[-3000:]  # one video could not be scored: the batch says so
    assert "1 of 3 videos could not be scored" in out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [Path(r["video"]).name for r in rows] == [real.name, fake.name, "no_audio.mp4"]
    for r in rows[:2]:
        assert 0.0 <= r["p_fake"] <= 1.0 and r["clips"] == 2 and r["face_frac"] > 0.5
        assert r["p_fake"] == pytest.approx(np.mean(r["clip_p_fake"]))
    assert rows[2]["p_fake"] is None and rows[2]["reason"] == "no_audio" and "no_audio.mp4" in rows[2]["error"]
    assert "--no-require-audio" in rows[2]["error"]  # says which model would score it
    # quiet by default: no TFLite/mediapipe chatter on fd 2, no MLflow type-hint warning, no traceback
    for noise in ("XNNPACK", "W0000", "UserWarning", "Traceback"):
        assert noise not in out.stderr, out.stderr[-2000:]


def test_a_video_without_audio_is_scored_by_a_model_trained_without_audio(trained, dfdc_sample, tmp_path):
    """The same weights with require_audio=False in their preprocess config score it on a silent mel."""
    import dataclasses

    import av

    from tasks.serve.predict import score_video
    from tasks.synthetic.dfdc_sample import write_video

    meta = json.loads(next(dfdc_sample.rglob("metadata.json")).read_text())
    part = next(dfdc_sample.rglob("metadata.json")).parent
    real = next(part / n for n, e in meta.items() if e["label"] == "REAL")
    with av.open(str(real)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    mute = write_video(tmp_path / "mute.mp4", frames, 25)  # the same face, no audio stream
    scorer = _scorer(trained)
    pre = preprocess_for(scorer)
    with FaceDetector() as det:
        refused = score_video(str(mute), scorer, pre, det)
        scored = score_video(str(mute), scorer, dataclasses.replace(pre, require_audio=False), det)
    assert refused.reason == "no_audio" and refused.p_fake is None
    assert scored.reason is None and 0.0 <= scored.p_fake <= 1.0 and scored.clips >= 1


def test_a_model_version_that_does_not_exist_is_one_clear_line(trained, dfdc_sample):
    video = next(dfdc_sample.rglob("*.mp4"))
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "predict", str(video), "--model", "avff-dfdc@999",
         "--tracking-uri", trained["tracking_uri"]],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr[-2000:]
    assert "avff-dfdc@999" in lines[0] and "not in the registry" in lines[0] and "has versions" in lines[0]


def test_a_training_folder_is_scored_with_its_best_checkpoint_and_its_decision(trained, tmp_path):
    """`--model <avff train's output_dir>` means the model train registered (best checkpoint, with
    decision.json), not the last epoch at an uncalibrated 0.5."""
    import shutil

    from storage.checkpoint import CheckpointStore, resolve_checkpoint
    from storage.decision import read_decision

    out = tmp_path / "train"
    shutil.copytree(trained["output_dir"], out)
    # whether the fixture's last epoch is its best depends on its training; in this copy "last" is surely
    # another model than "best" (the pretrained one), so reading the wrong pointer shows
    store = CheckpointStore(str(out / "checkpoints"))
    store.mark("last", Path(store.resolve("pretrained")).name)
    best_dir = resolve_checkpoint(str(out / "checkpoints" / "best.json"))
    assert best_dir != resolve_checkpoint(str(out / "checkpoints" / "last.json"))
    decision = read_decision(best_dir)
    folder, best = load_model(str(out), device="cpu"), load_model(str(out / "checkpoints" / "best.json"), device="cpu")
    assert decision is not None and (folder.threshold, folder.slope, folder.intercept) == (
        decision.threshold,
        decision.slope,
        decision.intercept,
    )
    for (k, a), b in zip(folder.model.state_dict().items(), best.model.state_dict().values()):
        assert torch.equal(a, b), k
