"""ingest-dfdc with identities=auto: the face clusters reach the manifest's groups, in-process and on Ray."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from storage.tables import ManifestRow, read_table
from tasks.ingest.scan import video_id_of
from tasks.synthetic.dfdc_sample import IDENTITIES


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_auto_identities_group_the_manifest_like_the_generators_identity_map(
    executor, dfdc_sample, ingest_config, prefect_server, tmp_path, request
):
    """The sample's 6 REAL videos show 6 different faces (its identities.csv): each becomes one
    identity ``face-<the REAL video>``, its fakes join it, and no two people are merged."""
    from flows.ingest import ingest_dfdc

    ray = {"ray_address": request.getfixturevalue("ray_address")} if executor == "ray" else {}
    out = tmp_path / "out"
    ingest_dfdc(ingest_config(dfdc_sample, out, executor=executor, identities="auto", **ray))
    rows = read_table(str(out / "manifest.parquet"), ManifestRow)
    with open(Path(dfdc_sample) / IDENTITIES) as f:
        person = {video_id_of(r["video"]): r["identity"] for r in csv.DictReader(f)}
    for r in rows:
        root = r.video_id if r.label == "REAL" else r.original
        assert r.group == f"identity:face-{root}", r
    group_of = {r.video_id: r.group for r in rows}
    assert len({person[v] for v in group_of}) == len(set(group_of.values())) == 6
    for v in group_of:
        assert all((person[v] == person[w]) == (group_of[v] == group_of[w]) for w in group_of)
