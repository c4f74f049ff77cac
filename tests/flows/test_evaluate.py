"""evaluate-avff on external generated folders (both classes, one class) with a registered or a local model."""

import json
import math
import os

import mlflow
import pytest


@pytest.mark.slow  # starts a Prefect server
def test_evaluate_flow_reports_per_manipulation(trained, tmp_path):
    from flows.evaluate import EvaluateConfig, evaluate_avff
    from storage.manipulations import MANIPULATIONS
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    data = make_dfdc_sample(tmp_path / "external", n_real=2, parts=0, duration_s=3.5, size=(160, 160), seed=123)
    mlflow.MlflowClient(trained["tracking_uri"]).set_registered_model_alias(
        "avff-dfdc", "scored", trained["model_version"]
    )
    result = evaluate_avff(EvaluateConfig(data=str(data), model="avff-dfdc@scored",
                                          tracking_uri=trained["tracking_uri"], out=str(tmp_path / "eval"),
                                          probes=1))  # fmt: skip
    assert set(result["by_type"]) == set(MANIPULATIONS)
    assert result["overall"]["n_real"] == 2 and result["overall"]["n_fake"] == 2 * len(MANIPULATIONS)
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text(), parse_constant=pytest.fail)  # no NaN
    assert all(0 <= r["p_fake"] <= 1 for r in scores["rows"])
    client = mlflow.MlflowClient(trained["tracking_uri"])
    run = client.get_run(result["run_id"])
    assert "eval_auc" in run.data.metrics and "eval_face_blend_auc" in run.data.metrics
    assert "| lipsync_offset |" in (tmp_path / "eval" / "evaluation.md").read_text()
    # the same experiment as training, tagged with the concrete version the alias pointed at
    assert run.info.experiment_id == client.get_run(trained["run_id"]).info.experiment_id
    assert run.data.tags["model_version"] == trained["model_version"] and run.data.tags["model_name"] == "avff-dfdc"
    assert run.data.tags["model_uri"] == f"models:/avff-dfdc/{trained['model_version']}"
    assert run.data.tags["training_run_id"] == trained["run_id"] and "prefect.flow_run_id" in run.data.tags
    # marked as an evaluation the way MLflow's runs table reads it, its scored videos as an evaluation dataset
    assert run.data.tags["mlflow.runType"] == "evaluation"
    (scored_input,) = run.inputs.dataset_inputs
    assert scored_input.tags[0].value == "evaluation" and scored_input.dataset.name == "evaluated:external"
    assert json.loads(scored_input.dataset.profile)["num_rows"] == len(scores["rows"])
    # the prior baseline is the model's training FAKE fraction, not the evaluated set's
    version = client.get_model_version("avff-dfdc", trained["model_version"])
    assert scores["result"]["prior"] == pytest.approx(float(version.tags["train_fake_fraction"]))
    overall = result["overall"]
    assert result["loses_to_prior"] == (not overall["log_loss"] < overall["prior_log_loss"])
    assert run.data.tags["loses_to_prior"] == str(result["loses_to_prior"]).lower()
    warned = "the model loses to the prior on the evaluated set" in (tmp_path / "eval" / "evaluation.md").read_text()
    assert warned == result["loses_to_prior"]
    # shortcut probes on one REAL video: every probe scored against the re-encoded control
    probes = {r["probe"]: r for r in scores["result"]["probes"]}
    assert {"control", "audio_shift_+0.5s", "audio_shift_-1s", "silence_added_0.5s", "reencoded_crf35"} <= set(probes)
    assert probes["control"]["delta"] == 0.0
    assert all(probes[k]["delta"] is not None for k in ("audio_shift_+0.5s", "reencoded_crf35"))
    assert "## Shortcut probes (1 REAL videos)" in (tmp_path / "eval" / "evaluation.md").read_text()


def test_json_safe_turns_nan_into_null():
    from flows.evaluate import json_safe

    out = json.dumps(json_safe({"auc": math.nan, "by_type": [{"ap": math.inf, "n": 3}]}), allow_nan=False)
    assert json.loads(out) == {"auc": None, "by_type": [{"ap": None, "n": 3}]}


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A generated DFDC-format folder of identities the tiny model never saw: 2 REAL, their fakes."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    root = tmp_path_factory.mktemp("external") / "data"
    return make_dfdc_sample(root, n_real=2, parts=0, duration_s=3.5, size=(160, 160), seed=321)


def _subset(source, out, label: str | None, n: int):
    """``out``: n videos of ``label`` (None: any) with their metadata, plus nometa.mp4, a file with no entry."""
    import shutil
    from pathlib import Path

    source, out = Path(source), Path(out)
    meta = json.loads((source / "metadata.json").read_text())
    chosen = [name for name in sorted(meta) if label is None or meta[name]["label"] == label][:n]
    out.mkdir(parents=True)
    for name in chosen:
        shutil.copy(source / name, out / name)
    shutil.copy(source / next(name for name in sorted(meta) if name not in chosen), out / "nometa.mp4")
    (out / "metadata.json").write_text(json.dumps({name: meta[name] for name in chosen}))
    return out


def _model(trained, kind: str) -> tuple[str, float]:
    """(--model, the model's decision threshold) for a local training folder or a registered version."""
    from storage.decision import read_decision
    from storage.checkpoint import resolve_checkpoint

    if kind == "local":  # a folder written by avff train (scored with its best checkpoint): no training prior
        best = resolve_checkpoint(os.path.join(trained["output_dir"], "checkpoints", "best.json"))
        return trained["output_dir"], read_decision(best).threshold
    version = mlflow.MlflowClient(trained["tracking_uri"]).get_model_version("avff-dfdc", trained["model_version"])
    return f"avff-dfdc@{trained['model_version']}", float(version.tags["threshold"])


@pytest.mark.slow  # starts a Prefect server
@pytest.mark.parametrize("label,kind", [("FAKE", "local"), ("REAL", "registered"), ("FAKE", "registered"),
                                        ("REAL", "local")])  # fmt: skip
def test_a_one_class_folder_is_evaluated_with_what_is_defined_on_it(trained, external, tmp_path, label, kind):
    """Issue 28: a folder of fakes only (or reals only) scored by a local model crashed formatting None."""
    from flows.evaluate import EvaluateConfig, evaluate_avff

    data = _subset(external, tmp_path / "data", label, 3 if label == "FAKE" else 2)
    model, threshold = _model(trained, kind)
    out = tmp_path / "eval"
    result = evaluate_avff(EvaluateConfig(data=str(data), model=model, tracking_uri=trained["tracking_uri"],
                                          out=str(out)))  # fmt: skip
    md = (out / "evaluation.md").read_text()
    scores = json.loads((out / "scores.json").read_text(), parse_constant=pytest.fail)  # no NaN
    labelled = [r for r in scores["rows"] if r["label"] is not None]
    assert {r["label"] for r in labelled} == {label} and all(r["p_fake"] is not None for r in labelled)
    called = sum(r["p_fake"] >= threshold for r in labelled)
    assert [r["verdict"] for r in labelled] == [("FAKE" if r["p_fake"] >= threshold else "REAL") for r in labelled]
    assert f"FAKE when P(FAKE) >= {threshold:.3f}" in md
    if label == "FAKE":
        assert f"**Detection rate: {called} of {len(labelled)} FAKE videos called FAKE" in md
        assert result["overall"]["detection_rate"] == pytest.approx(called / len(labelled))
    else:
        assert f"**False-positive rate: {called} of {len(labelled)} REAL videos called FAKE" in md
    assert f"this set holds only {label} videos" in md
    # the file without a metadata entry is scored and listed, not silently skipped, and not measured
    nometa = next(r for r in scores["rows"] if r["video_id"] == "nometa")
    assert nometa["label"] is None and f"| nometa | {nometa['p_fake']:.3f} | {nometa['verdict']} |" in md
    assert result["overall"]["n_real"] + result["overall"]["n_fake"] == len(labelled)
    run = mlflow.MlflowClient(trained["tracking_uri"]).get_run(result["run_id"])
    metrics, tags = run.data.metrics, run.data.tags
    assert "eval_auc" not in metrics and "eval_auc" in tags["undefined_metrics"]
    # the baselines' AUCs too: not logged as a number, named undefined, n/a in the table
    assert not {"eval_prior_auc", "eval_lip_sync_auc", "eval_sharpness_auc"} & set(metrics)
    assert {"eval_lip_sync_auc", "eval_sharpness_auc"} <= set(tags["undefined_metrics"].split(", "))
    assert "| all | n/a | n/a | n/a | n/a |" in md
    assert metrics["eval_log_loss"] == pytest.approx(result["overall"]["log_loss"])
    assert float(run.data.params["threshold"]) == pytest.approx(threshold)
    rate = "eval_detection_rate" if label == "FAKE" else "eval_false_positive_rate"
    assert metrics[rate] == pytest.approx(called / len(labelled))
    overall = result["overall"]
    if kind == "local":  # no prior: the baselines are undefined, so the model cannot be said to lose to them
        assert scores["result"]["prior"] is None and "eval_prior_log_loss" in tags["undefined_metrics"]
        assert result["loses_to_prior"] is False and "model_version" not in tags
    else:
        assert math.isfinite(overall["prior_log_loss"]) and tags["model_version"] == trained["model_version"]
        assert result["loses_to_prior"] == (not overall["log_loss"] < overall["prior_log_loss"])
    assert tags["loses_to_prior"] == str(result["loses_to_prior"]).lower()
    assert ("the model loses to the prior" in md) == result["loses_to_prior"]


def _video_mean(row: dict, name: str) -> float:
    """A video's hand-made statistic as scores.json holds it: its clips' mean, undefined (null) clips skipped."""
    values = [v for v in row["handmade"][name] if v is not None]
    return float(sum(values) / len(values)) if values else math.nan


@pytest.mark.slow  # starts a Prefect server
def test_evaluate_reports_the_hand_made_statistics_beside_the_model(trained, external, tmp_path):
    """Issue 25: the baselines a training run logs (the prior's and the two hand-made statistics' video AUCs),
    measured on the clips the model scored, as MLflow metrics of the evaluation run, in evaluation.md and in
    the Prefect artifact, overall and per manipulation type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from sklearn.metrics import roc_auc_score

    from flows.evaluate import EvaluateConfig, evaluate_avff
    from storage.checkpoint import resolve_checkpoint
    from tasks.evaluate.handmade import score_clips
    from tasks.ingest.preprocess import face_detector
    from tasks.serve.predict import decoded_clips, preprocess_for
    from tasks.serve.scorer import load_model

    model, _ = _model(trained, "registered")
    out = tmp_path / "eval"
    result = evaluate_avff(EvaluateConfig(data=str(external), model=model, tracking_uri=trained["tracking_uri"],
                                          out=str(out)))  # fmt: skip
    rows = json.loads((out / "scores.json").read_text())["rows"]
    # measured on the clips the model scored: decoding the first video again gives the same numbers
    scorer = load_model(resolve_checkpoint(os.path.join(trained["output_dir"], "checkpoints", "best.json")))
    pre = preprocess_for(scorer)
    with face_detector(pre) as det:
        clips, _ = decoded_clips(str(external / f"{rows[0]['video_id']}.mp4"), pre, det)
    again = score_clips(clips)
    assert len(again) == rows[0]["clips"] == len(rows[0]["handmade"]["sharpness"])
    for name in ("lip_sync", "sharpness"):
        measured = [math.nan if v is None else v for v in rows[0]["handmade"][name]]
        assert measured == pytest.approx([c.scores[name] for c in again], nan_ok=True)

    run = mlflow.MlflowClient(trained["tracking_uri"]).get_run(result["run_id"])
    metrics = run.data.metrics  # in the store's order, the run page's
    assert list(metrics)[:6] == ["eval_auc", "eval_log_loss", "eval_prior_auc", "eval_prior_log_loss",
                                 "eval_lip_sync_auc", "eval_sharpness_auc"]  # fmt: skip
    md = (out / "evaluation.md").read_text()
    with get_client(sync_client=True) as client:
        flow_run = [run.data.tags["prefect.flow_run_id"]]
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run))
        )
    artifact = next(a.data for a in found if a.key == "evaluation")
    assert "## The model against one-line statistics" in md and "## The model against one-line statistics" in artifact
    for group in ("all", "lipsync_offset", "face_blend"):
        chosen = [r for r in rows if r["label"] == "REAL" or (r["label"] and group in ("all", r["manipulation"]))]
        y = [r["label"] == "FAKE" for r in chosen]
        prefix = "eval_" if group == "all" else f"eval_{group}_"
        auc = {"model": roc_auc_score(y, [r["p_fake"] for r in chosen]), "prior": 0.5}
        for name in ("lip_sync", "sharpness"):
            scored = [(label, _video_mean(r, name)) for label, r in zip(y, chosen)]
            auc[name] = roc_auc_score(*zip(*[(label, v) for label, v in scored if math.isfinite(v)]))
            assert metrics[f"{prefix}{name}_auc"] == pytest.approx(auc[name])
        assert metrics[f"{prefix}prior_auc"] == 0.5 and metrics[f"{prefix}auc"] == pytest.approx(auc["model"])
        line = f"| {group} | " + " | ".join(f"{auc[k]:.3f}" for k in ("model", "prior", "lip_sync", "sharpness")) + " |"
        assert line in md and line in artifact


@pytest.mark.slow  # starts a Prefect server and `mlflow models serve`
def test_evaluate_predict_the_pyfunc_and_the_served_model_give_the_same_verdicts(trained, external, tmp_path):
    """Issue 25: one decision rule, the model's threshold and calibration, whichever way a video is scored:
    evaluate-avff, `avff predict`, the registered pyfunc, and `mlflow models serve` of that version (a real
    server on 127.0.0.1, sent paths and one video's bytes)."""
    import base64
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    from flows.evaluate import EvaluateConfig, evaluate_avff
    from tasks.serve.decision import verdict

    data = _subset(external, tmp_path / "data", None, 3)  # REAL and FAKE, plus one without a label
    model, threshold = _model(trained, "registered")
    uri = f"models:/avff-dfdc/{trained['model_version']}"
    result = evaluate_avff(EvaluateConfig(data=str(data), model=model, tracking_uri=trained["tracking_uri"],
                                          out=str(tmp_path / "eval")))  # fmt: skip
    assert result["decision"]["threshold"] == pytest.approx(threshold)
    rows = json.loads((tmp_path / "eval" / "scores.json").read_text())["rows"]
    paths = [str(data / f"{r['video_id']}.mp4") for r in rows]
    assert len(rows) == 4 and all(r["p_fake"] is not None for r in rows)

    out = subprocess.run([sys.executable, "-m", "flows.cli", "predict", *paths, "--model", model, "--tracking-uri",
                          trained["tracking_uri"], "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    predicted = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    mlflow.set_tracking_uri(trained["tracking_uri"])
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)
    pyfunc_rows = pyfunc.predict(pd.DataFrame({"path": paths}))  # the pyfunc's input is the video itself
    uploaded, by_path = _served(uri, trained["tracking_uri"], [
        [{"video": base64.b64encode(open(paths[0], "rb").read()).decode(), "name": "upload.mp4"}],
        [{"path": p} for p in paths[1:]],
    ])  # fmt: skip
    served = uploaded + by_path

    assert [p["threshold"] for p in predicted] == [pytest.approx(threshold)] * 4
    assert [r["threshold"] for r in pyfunc_rows + served] == [pytest.approx(threshold)] * 8
    for scored in (predicted, pyfunc_rows, served):
        np.testing.assert_allclose([p["p_fake"] for p in scored], [r["p_fake"] for r in rows], rtol=0, atol=1e-5)
    verdicts = [r["verdict"] for r in rows]
    assert verdicts == [p["verdict"] for p in predicted] == [p["verdict"] for p in pyfunc_rows] == [
        p["verdict"] for p in served] == [verdict(p["p_fake"], threshold)["verdict"] for p in served]  # fmt: skip
    assert served[0]["video"] == "upload.mp4" and [p["clips"] for p in served] == [p["clips"] for p in predicted]
    assert all(len(p["faces"]) == p["clips"] == len(p["clip_p_fake"]) for p in served)
    labelled = [r for r in rows if r["label"] is not None]
    assert result["overall"]["accuracy"] == pytest.approx(np.mean([r["verdict"] == r["label"] for r in labelled]))


def _served(uri: str, tracking_uri: str, requests: list[list[dict]]) -> list[list[dict]]:
    """Each request's records scored by `mlflow models serve -m uri --env-manager local` on a free
    127.0.0.1 port (a request's rows are all paths or all bytes: MLflow cannot base64-decode a missing value)."""
    import subprocess
    import sys
    import tempfile
    import urllib.error
    import urllib.request
    from pathlib import Path

    from deployments.stack import free_port, wait_for_port

    port, bin_dir = free_port(), str(Path(sys.executable).parent)  # the server execs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([f"{bin_dir}/mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        try:
            wait_for_port(port, proc, timeout=300, name="mlflow models serve")
        except RuntimeError:
            log.seek(0)
            pytest.fail(f"mlflow models serve exited: {log.read()[-3000:]}")
        answers = []
        for records in requests:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                             data=json.dumps({"dataframe_records": records}).encode(),
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=600) as r:
                    answers.append(json.loads(r.read())["predictions"])
            except urllib.error.HTTPError as e:
                pytest.fail(f"the served model answered {e.code}: {e.read()[:3000]!r}")
        return answers
    finally:
        os.killpg(proc.pid, 15)  # the server and its uvicorn child
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


SHARED_SAMPLE = "/work/shared/data/dfdc_sample"  # 3 FAKE DFDC videos with metadata, 1 without


@pytest.mark.slow  # starts a Prefect server
@pytest.mark.skipif(not os.path.isdir(SHARED_SAMPLE), reason="the real DFDC sample is not on this machine")
def test_the_real_fakes_only_sample_scored_by_a_local_model_states_its_detection_rate(trained, tmp_path):
    """Issue 28's command: `avff evaluate --data dfdc_sample --model <avff train's folder>`."""
    from flows.evaluate import EvaluateConfig, evaluate_avff

    result = evaluate_avff(EvaluateConfig(data=SHARED_SAMPLE, model=trained["output_dir"],
                                          tracking_uri=trained["tracking_uri"], out=str(tmp_path / "eval")))  # fmt: skip
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    rows = json.loads((tmp_path / "eval" / "scores.json").read_text())["rows"]
    fakes = [r for r in rows if r["label"] == "FAKE" and r["p_fake"] is not None]
    caught = sum(r["verdict"] == "FAKE" for r in fakes)
    assert len(fakes) == 3 and f"**Detection rate: {caught} of 3 FAKE videos called FAKE" in md
    assert "| lynaeydofd |" in md and not result["loses_to_prior"]


def test_scored_videos_are_the_evaluation_runs_dataset_unlabelled_and_unscored_ones_included(tmp_path, monkeypatch):
    """The dataset input an evaluation run carries, through a real sqlite store: every scored row, an
    unlabelled file (label None) and an unscorable one (P(FAKE) None) included, context "evaluation"."""
    from flows.evaluate import log_scored_videos
    from tasks.tracking.mlflow_tracker import MLflowTracker

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("scored-videos")  # an earlier test's active experiment id is not in this store
    rows = [{"video_id": "a", "label": "FAKE", "manipulation": "face_blend", "p_fake": 0.9, "verdict": "FAKE"},
            {"video_id": "b", "label": None, "manipulation": None, "p_fake": 0.2, "verdict": "REAL"},
            {"video_id": "c", "label": "REAL", "manipulation": None, "p_fake": None, "verdict": None}]  # fmt: skip
    try:
        with mlflow.start_run() as run:
            log_scored_videos(MLflowTracker(), run.info.run_id, rows, str(tmp_path / "external/"))
        (scored,) = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    finally:
        mlflow.set_tracking_uri(None)
    assert scored.tags[0].value == "evaluation" and scored.dataset.name == "evaluated:external"
    assert json.loads(scored.dataset.profile)["num_rows"] == 3
    source = json.loads(scored.dataset.schema)["mlflow_colspec"]
    assert {c["name"] for c in source} == {"video_id", "label", "manipulation", "p_fake", "verdict"}
