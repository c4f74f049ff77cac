"""The scorer applies the calibration a model carries (decision.json beside its weights); none without one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avff_model import AVFF, get_config
from storage.decision import DECISION_FILE, Decision, read_decision, write_decision
from tasks.serve.scorer import CONFIG_ARTIFACT, CONFIG_FILE, DECISION_ARTIFACT, WEIGHTS_ARTIFACT, Scorer, load_model
from storage.checkpoint import CheckpointStore

CFG = dict(img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)


@pytest.fixture(scope="module")
def model_and_inputs():
    torch.manual_seed(0)
    model = AVFF(get_config("tiny", **CFG)).eval()
    rng = np.random.default_rng(0)
    video = rng.normal(size=(3, 3, 4, 32, 32)).astype(np.float32)
    audio = rng.normal(size=(3, 1, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(video), torch.from_numpy(audio)).float().numpy()  # (3,)
    return model, video, audio, logits


def test_a_scorer_applies_the_slope_and_intercept_of_its_decision(model_and_inputs):
    model, video, audio, logits = model_and_inputs
    scorer = Scorer(model, decision=Decision(0.4, "f1", 0.5, 1.5))
    expected = 1 / (1 + np.exp(-(0.5 * logits + 1.5)))
    np.testing.assert_allclose(scorer.predict_proba(video, audio), expected, rtol=1e-5, atol=1e-6)
    assert scorer.threshold == 0.4 and (Scorer(model).slope, Scorer(model).intercept) == (1.0, 0.0)


def test_a_checkpoint_loads_its_decision_and_an_old_one_scores_with_t_1(model_and_inputs, tmp_path):
    model, video, audio, logits = model_and_inputs
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    directory = store.save("epoch-0001", model, dataclasses.asdict(model.cfg), {}, ("best",))
    old = load_model(str(tmp_path / "checkpoints" / "best.json"), device="cpu")  # written before calibration
    assert (old.slope, old.intercept) == (1.0, 0.0) and old.threshold is None
    np.testing.assert_allclose(old.predict_proba(video, audio), 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
    write_decision(directory, Decision(0.3, "eer", 0.4, -0.7))
    for uri in (str(tmp_path / "checkpoints" / "best.json"), directory, f"{directory}/model.safetensors"):
        scorer = load_model(uri, device="cpu")
        assert (scorer.slope, scorer.intercept, scorer.threshold) == (0.4, -0.7, 0.3)
        np.testing.assert_allclose(scorer.predict_proba(video, audio), 1 / (1 + np.exp(-(0.4 * logits - 0.7))),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    # a decision.json written by temperature scaling still means sigmoid(logit / T)
    (Path(directory) / DECISION_FILE).write_text(json.dumps({"threshold": 0.3, "criterion": "eer", "temperature": 2.5}))
    old_t = load_model(directory, device="cpu")
    np.testing.assert_allclose(old_t.predict_proba(video, audio), 1 / (1 + np.exp(-logits / 2.5)), rtol=1e-5, atol=1e-6)


def test_decision_round_trips_reads_old_files_as_they_were_meant_and_refuses_bad_maps(tmp_path):
    write_decision(str(tmp_path), Decision(0.5, "f1", 1.7, -0.2))
    assert (
        read_decision(str(tmp_path)) == Decision(0.5, "f1", 1.7, -0.2) and read_decision(str(tmp_path / "none")) is None
    )
    assert Decision.from_json({"threshold": 0.2, "criterion": "f1"}) == Decision(0.2, "f1", 1.0, 0.0)
    assert Decision.from_json({"threshold": 0.2, "criterion": "f1", "temperature": 4.0}) == Decision(
        0.2, "f1", 0.25, 0.0
    )
    with pytest.raises(ValueError, match="slope"):
        Decision(0.5, "f1", 0.0)
    with pytest.raises(ValueError, match="temperature"):
        Decision.from_json({"threshold": 0.2, "temperature": -1.0})


def test_the_pyfunc_applies_its_decision_artifacts_calibration_and_scores_old_models_uncalibrated(model_and_inputs,
                                                                                              tmp_path):  # fmt: skip
    from tasks.serve.pyfunc_model import AVFFPyfunc

    model, video, audio, logits = model_and_inputs
    config = dataclasses.asdict(model.cfg)
    directory = CheckpointStore(str(tmp_path)).save("m", model, config, {})
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    write_decision(str(tmp_path), Decision(0.5, "f1", 0.5, 1.0))
    artifacts = {WEIGHTS_ARTIFACT: f"{directory}/model.safetensors", CONFIG_ARTIFACT: str(tmp_path / CONFIG_FILE)}
    for decision, (a, b) in (({DECISION_ARTIFACT: str(tmp_path / DECISION_FILE)}, (0.5, 1.0)), ({}, (1.0, 0.0))):
        pyfunc = AVFFPyfunc()
        pyfunc.load_context(SimpleNamespace(artifacts={**artifacts, **decision}))  # what MLflow hands load_context
        p = pyfunc.scorer.predict_proba(video, audio)
        np.testing.assert_allclose(p, 1 / (1 + np.exp(-(a * logits + b))), rtol=1e-5, atol=1e-6)
        assert pyfunc.scorer.threshold == (0.5 if decision else None)


def test_a_training_output_folder_scores_with_its_best_checkpoint_and_decision(tmp_path):
    """avff train's output_dir as --model: the best checkpoint (registered, with decision.json), not the last."""
    torch.manual_seed(1)
    best_model, last_model = AVFF(get_config("tiny", **CFG)).eval(), AVFF(get_config("tiny", **CFG)).eval()
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    best = store.save("epoch-0001", best_model, dataclasses.asdict(best_model.cfg), {}, ("best",))
    store.save("epoch-0002", last_model, dataclasses.asdict(last_model.cfg), {}, ("last",))
    write_decision(best, Decision(0.3, "f1", 0.4, -0.2))
    scorer = load_model(str(tmp_path), device="cpu")
    assert (scorer.threshold, scorer.slope, scorer.intercept) == (0.3, 0.4, -0.2)
    for (k, a), b in zip(scorer.model.state_dict().items(), best_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_scorer_passes_each_clips_mouth_box_to_the_model(model_and_inputs):
    """predict_proba(..., mouth): the clips' mouth boxes reach the sync branch (the model's own
    forward with them); the template's box given explicitly scores as none; a wrong shape is refused."""
    from avff_model.crop_geometry import MOUTH_BOX

    model, video, audio, logits = model_and_inputs
    scorer = Scorer(model)
    mouth = np.array([[0.0, 0.4, 0.0, 0.4]] * 3, np.float32)
    with torch.inference_mode():
        own = model(torch.from_numpy(video), torch.from_numpy(audio), torch.from_numpy(mouth)).float().numpy()
    assert not np.allclose(own, logits)
    np.testing.assert_allclose(
        scorer.predict_proba(video, audio, mouth=mouth), 1 / (1 + np.exp(-own)), rtol=1e-5, atol=1e-6
    )
    template = np.array([MOUTH_BOX] * 3, np.float32)
    np.testing.assert_allclose(scorer.predict_proba(video, audio, mouth=template), scorer.predict_proba(video, audio))
    with pytest.raises(ValueError, match=r"expected mouth \(3, 4\), got \(2, 4\)"):
        scorer.predict_proba(video, audio, mouth=mouth[:2])


def test_a_logged_pyfunc_carries_the_preprocessing_and_decision_files_a_checkpoint_holds(model_and_inputs, tmp_path,
                                                                                         monkeypatch):  # fmt: skip
    """log_pyfunc_model writes preprocess.json and decision.json through storage.decision (one writer each):
    the logged artifacts are the bytes a checkpoint's folder holds, and the model loads with both."""
    import mlflow

    from storage.decision import PREPROCESS_FILE, write_preprocess
    from tasks.serve.scorer import log_pyfunc_model

    model, video, audio, logits = model_and_inputs
    config = dataclasses.asdict(model.cfg)
    directory = CheckpointStore(str(tmp_path / "ckpt")).save("m", model, config, {})
    preprocess, decision = {"clip_mode": "native", "face_size": 32}, Decision(0.3, "f1", 0.5, 1.0)
    beside = tmp_path / "beside"  # what finish.keep_decision / keep_preprocess write beside a checkpoint
    write_preprocess(str(beside), preprocess)
    write_decision(str(beside), decision)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        # an explicit experiment: an earlier test may leave another store's experiment active in this process
        with mlflow.start_run(experiment_id=mlflow.create_experiment("pyfunc")):
            info = log_pyfunc_model(f"{directory}/model.safetensors", config, preprocess=preprocess, decision=decision)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=str(tmp_path / "dl")))
    finally:
        mlflow.set_tracking_uri(None)
    for name in (PREPROCESS_FILE, DECISION_FILE):
        assert (local / "artifacts" / name).read_bytes() == (beside / name).read_bytes()
    scorer = load_model(str(local), device="cpu")
    assert scorer.preprocess == preprocess and scorer.threshold == 0.3
    np.testing.assert_allclose(scorer.predict_proba(video, audio), 1 / (1 + np.exp(-(0.5 * logits + 1.0))), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_a_decision_with_a_readout_round_trips_and_every_loader_scores_with_it(tmp_path):
    """decision.json's "readout" (readout="fitted") is applied by a checkpoint's scorer and by the pyfunc; a
    decision without one keeps the file format older readers know."""
    from avff_model.readout import Readout
    from tasks.serve.pyfunc_model import AVFFPyfunc

    torch.manual_seed(2)
    model = AVFF(get_config("tiny", **CFG)).eval()
    width = model.signals.texture.out_dim
    readout = Readout({"fusion": 0.5, "signals": 2.0, "probe": -1.0}, 0.3, tuple([0.05] * width), 0.1)
    decision = Decision(0.4, "f1", 1.2, -0.1, readout.to_json())
    assert "readout" not in Decision(0.4, "f1").to_json()
    config = dataclasses.asdict(model.cfg)
    directory = CheckpointStore(str(tmp_path / "checkpoints")).save("epoch-0001", model, config, {}, ("best",))
    write_decision(directory, decision)
    assert read_decision(directory) == decision
    video = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    audio = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    model.set_readout(readout)
    with torch.inference_mode():
        expected = torch.sigmoid(1.2 * model(video, audio) - 0.1).numpy()
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    pyfunc = AVFFPyfunc()
    pyfunc.load_context(SimpleNamespace(artifacts={WEIGHTS_ARTIFACT: f"{directory}/model.safetensors",
                                                   CONFIG_ARTIFACT: str(tmp_path / CONFIG_FILE),
                                                   DECISION_ARTIFACT: f"{directory}/{DECISION_FILE}"}))  # fmt: skip
    for scorer in (load_model(directory, device="cpu"), pyfunc.scorer):
        assert scorer.model.readout == readout
        np.testing.assert_allclose(scorer.predict_proba(video, audio), expected, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_written_before_the_colour_bank_loads_as_it_was_trained(model_and_inputs, tmp_path):
    """A config saved before ``texture_colour`` existed (no such key) builds the grey-only texture branch its
    weights were trained with, so they load and score the same; a config that turns it on gets the colour bank."""
    torch.manual_seed(1)
    old_model = AVFF(get_config("tiny", **CFG, texture_colour=False)).eval()
    config = dataclasses.asdict(old_model.cfg)
    del config["texture_colour"]  # as an older checkpoint's config.json was written
    CheckpointStore(str(tmp_path / "checkpoints")).save("epoch-0001", old_model, config, {}, ("best",))
    loaded = load_model(str(tmp_path / "checkpoints" / "best.json"), device="cpu")
    assert loaded.model.signals.texture.colour is None and loaded.model.signals.texture.out_dim == 27
    _, video, audio, _ = model_and_inputs
    with torch.inference_mode():
        expected = torch.sigmoid(old_model(torch.from_numpy(video), torch.from_numpy(audio)).float()).numpy()
    np.testing.assert_allclose(loaded.predict_proba(video, audio), expected, rtol=1e-5, atol=1e-6)
    assert AVFF(get_config("tiny", **CFG, texture_colour=True)).signals.texture.out_dim == 51
