"""ingest-dfdc's Prefect artifacts: every refused video by name, totals that add up, progress to 100 %."""

import json

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow  # every test here starts a Prefect server


def _artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_ingest_shows_refused_videos_by_name(prefect_server, ingest_config, tmp_path):
    from flows.ingest import ingest_dfdc
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    data = make_dfdc_sample(tmp_path / "data", n_real=1, parts=0, duration_s=3.5, size=(160, 160), seed=5)
    meta = json.loads((data / "metadata.json").read_text())
    real = next(n for n, e in meta.items() if e["label"] == "REAL")
    (data / "broken.mp4").write_bytes(b"\x00" * 1000)  # listed, undecodable
    meta["broken.mp4"] = {"label": "FAKE", "original": real}
    meta["gone.mp4"] = {"label": "REAL"}  # listed, no file
    (data / "metadata.json").write_text(json.dumps(meta))
    (data / "stray.mp4").write_bytes((data / real).read_bytes())  # a file without an entry

    state = ingest_dfdc(ingest_config(data, tmp_path / "out"), return_state=True)
    result = state.result()
    artifacts = _artifacts(state.state_details.flow_run_id)

    quarantine = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    refused = json.loads(artifacts["ingest-refused"].data)
    assert (
        {r["video"] for r in refused} == {q["rel_path"] for q in quarantine} >= {"broken.mp4", "gone.mp4", "stray.mp4"}
    )
    assert all(r["reason"] and r["message"] for r in refused)
    assert next(r for r in refused if r["video"] == "stray.mp4")["reason"] == "missing_metadata"

    summary = artifacts["ingest-summary"].data
    files = len(list(data.glob("*.mp4")))
    considered = len(meta) + 1  # every metadata entry + the stray file
    assert considered == files + 1  # gone.mp4 has no file
    line = f"videos considered: {considered} = {len(meta)} metadata entries + 1 video files without an entry"
    assert line in summary
    assert f"{result['ingested']} + {len(quarantine)} = {considered}" in summary
    assert "- duration:" in summary and "- audio:" in summary

    assert artifacts["ingest-progress"].data == 100.0
    assert "videos/s, done" in artifacts["ingest-progress"].description
