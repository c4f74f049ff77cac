"""The ingest benchmark's breakdown is the pipeline's own stage table, and the stages cover the pipeline.

A stage added to ingest must be a row of tasks/ingest/stages.py STAGES (``stage()`` refuses other
names, and the source is checked here), the benchmark prints exactly those rows, and on a real
clip the rows add up to the unit's CPU time with little left unclaimed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from storage.shard_schema import REAL
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.ingest.stages import NAMES, OTHER, STAGES, measuring, stage
from tasks.ingest.write_unit import UnitVideo, WorkUnit, fingerprint, process_unit

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "dfdc_sample"
PIPELINE = [ROOT / "tasks" / "ingest", ROOT / "storage"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stage_calls() -> dict[str, list[str]]:
    """name -> ['file:line'] of every ``stage("name")`` call under tasks/ingest and storage."""
    calls: dict[str, list[str]] = {}
    for folder in PIPELINE:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "stage":
                    arg = node.args[0] if node.args else None
                    name = arg.value if isinstance(arg, ast.Constant) else f"<not a literal: {ast.unparse(arg)}>"
                    calls.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return calls


def test_every_stage_in_the_code_is_declared_and_every_declared_stage_runs_somewhere():
    calls = _stage_calls()
    assert set(calls) - set(NAMES) == set(), f"stages used but not in STAGES: {calls}"
    assert set(NAMES) - set(calls) == set(), f"STAGES rows no code charges: {set(NAMES) - set(calls)}"


def test_an_undeclared_stage_is_refused_by_name():
    with pytest.raises(KeyError, match="'landmarkz' is not declared in tasks/ingest/stages.py"):
        with stage("landmarkz"):
            pass


def test_nested_stages_are_exclusive_and_add_up_to_the_clock():
    with measuring() as clock:
        with stage("decode"):
            sum(i * i for i in range(200_000))
            with stage("convert"):
                sum(i * i for i in range(400_000))
        sum(i * i for i in range(100_000))  # no stage: other
    assert set(clock.cpu) == {"decode", "convert", OTHER}
    assert clock.cpu["convert"] > clock.cpu["decode"] > 0  # convert's work is not also decode's
    assert clock.total() == pytest.approx(sum(clock.cpu.values()))


def test_a_whole_stage_keeps_the_stages_nested_in_it():
    """Every face beyond the main one is detection too, but its cost is charged to "faces"."""
    with measuring() as clock:
        with stage("faces"):
            with stage("detect"):
                sum(i * i for i in range(200_000))
        with stage("detect"):
            sum(i * i for i in range(100_000))
    assert set(clock.cpu) == {"faces", "detect", OTHER}
    assert clock.cpu["faces"] > clock.cpu["detect"] > 0


def test_the_benchmark_breakdown_is_the_stage_table_plus_what_lies_around_it(bench):
    assert bench.BREAKDOWN == (*NAMES, OTHER, bench.UNIT, bench.FLOW, bench.SERVER)


def test_the_benchmark_breakdown_adds_up_to_the_command(bench):
    """The rows of a run sum to its CPU time: the command's own process beyond its units is the
    flow, its children (the temporary Prefect server) the server."""
    videos = [
        {"cpu_seconds": {"decode": 1.0, "convert": 0.25, OTHER: 0.05}},
        {"cpu_seconds": {"decode": 0.9, "jpeg": 0.1}},
    ]
    run = {"cpu": 3.5, "self_cpu": 3.0, "records": [{"cpu_seconds": 2.5, "videos": videos}]}
    rows = bench.breakdown(run)
    assert rows["decode"] == pytest.approx(1.9) and rows[bench.UNIT] == pytest.approx(0.2)
    assert rows[bench.FLOW] == pytest.approx(0.5) and rows[bench.SERVER] == pytest.approx(0.5)
    assert sum(rows.values()) == pytest.approx(3.5)


def test_on_a_real_clip_the_stages_claim_the_unit(tmp_path):
    """process_unit on a real 1080p DFDC clip with landmarks and every face: its record's stages
    cover the work, little is unclaimed."""
    clip = SHARED / "abofeumbvv.mp4"
    if not clip.exists():
        pytest.skip(f"{clip} is absent (real clips live in ../shared/data)")
    cfg = PreprocessConfig(crop="landmarks", max_faces=4)
    video = UnitVideo(video_id="abofeumbvv", path=str(clip), rel_path=clip.name, part="p", label=REAL,
                      split="train", group="g", original=None, fingerprint=fingerprint(str(clip)))  # fmt: skip
    with face_detector(cfg) as detector:
        record = process_unit(WorkUnit("train", "p", 0, str(tmp_path / "s.tar"), (video,)), cfg, detector=detector)
    assert not record.quarantined
    cpu = record.videos[0]["cpu_seconds"]
    assert set(cpu) <= {*NAMES, OTHER}
    runs = {s.name for s in STAGES if s.only in ("", "max_faces > 1", "crop=landmarks")}  # what this cfg switches on
    missing = {n for n in runs if not cpu.get(n, 0) > 0}
    assert not missing, f"stages that never ran on a real clip: {missing}"
    video_total = sum(cpu.values())
    assert cpu.get(OTHER, 0.0) < 0.1 * video_total, cpu  # an expensive unstaged step would land here
    assert cpu["decode"] == max(cpu.values())  # 1080p H.264: decoding dominates
    assert 0 < record.cpu_seconds - video_total < 0.25 * record.cpu_seconds  # the unit's own work is small
    on_disk = json.loads((tmp_path / "s.tar.json").read_text())
    assert on_disk["videos"][0]["cpu_seconds"] == pytest.approx(cpu)


def test_the_workers_phase_runs_from_the_first_units_start_to_the_last_units_end(bench, tmp_path):
    """Each unit is dated by its record (written when the shard is done) minus the unit's own seconds; the
    fan-out's phase spans them, so the command's start-up (Ray, the Prefect server) is not in it."""
    for name, seconds, end in (("a", 10.0, 1000.0), ("b", 12.0, 1003.0), ("c", 9.0, 1015.0)):
        record = tmp_path / f"{name}.tar.json"
        record.write_text(json.dumps({"seconds": seconds, "videos": []}))
        os.utime(record, (end, end))
    records = bench.read_records(tmp_path)
    assert [r["_span"] for r in records] == [(990.0, 1000.0), (991.0, 1003.0), (1006.0, 1015.0)]
    assert bench.fanout_wall({"records": records}) == pytest.approx(1015.0 - 990.0)


def test_the_phase_efficiency_is_the_product_of_its_three_factors(bench):
    """Units' CPU, their share of a core and the workers' occupancy multiply to the phase efficiency exactly,
    so the bench's table says which of the three a second worker loses."""

    def run(units: list[tuple[float, float, float]]) -> dict:  # (start, wall seconds, cpu seconds) per unit
        return {"records": [{"_span": (t0, t0 + wall), "seconds": wall, "cpu_seconds": cpu} for t0, wall, cpu in units]}

    one = run([(0.0, 10.0, 9.5), (10.0, 10.0, 9.5), (20.0, 10.0, 9.5), (30.0, 10.0, 9.5)])  # 1 worker, back to back
    two = run([(0.0, 12.0, 10.0), (0.5, 12.0, 10.0), (13.0, 12.0, 10.0), (12.5, 12.0, 10.0)])  # 2 workers, a gap
    f1, f2 = bench.fanout_factors(one, 1), bench.fanout_factors(two, 2)
    assert f1 == pytest.approx({"unit_cpu_s": 38.0, "share": 0.95, "occupancy": 1.0})
    assert f2["share"] == pytest.approx(40.0 / 48.0) and f2["occupancy"] == pytest.approx(48.0 / (2 * 25.0))
    efficiency = bench.fanout_wall(one) / (2 * bench.fanout_wall(two))  # the same videos: rate(2) / (2 rate(1))
    assert math.prod(bench.efficiency_factors(f1, f2).values()) == pytest.approx(efficiency)
