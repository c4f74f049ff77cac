"""bench/results.py: its variants and seeds, the doc's tables (stand-in marks, best and last, targets), the command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import results
from tests.benchmark_rows import external_rows
from tasks.evaluate.benchmark import summarise
from tasks.train.benchmark import drawn_kinds, stood_in
from tasks.train.settings import PSEUDO_FAKE_KINDS

ROOT = Path(__file__).resolve().parents[2]


def _args(**kw) -> SimpleNamespace:
    """The docs/results.md command's variant flags."""
    base = dict(
        set=['pseudo_fakes={"p": 0.5}', "lr=1e-3"],
        variant_set=[
            'avff={"fusion": "avff_concat"}',
            'avff_plain={"fusion": "avff_concat", "pseudo_fakes": {"p": 0.0}}',
            'avff_lipsync={"fusion": "avff_concat", "pseudo_fakes": {"p": 0.5, "kinds": ["audio_shift"]}}',
        ],
        pretrain_epochs=1,
        epochs=2,
    )
    return SimpleNamespace(**{**base, **kw})


def test_a_variants_run_takes_the_benchmarks_stage_two_then_set_then_its_own_fields(tmp_path):
    args = _args()
    s = results.settings_of(args, "avff_plain", tmp_path / "seed4", 4, {"stages": "classify"})
    assert (s.fusion, s.lr, s.batch_size, s.seed, s.epochs, s.stages) == ("avff_concat", 1e-3, 8, 4, 2, "classify")
    assert s.pseudo_fakes.p == 0.0 and s.data == str(tmp_path / "seed4" / "shards")
    assert s.output_dir == str(tmp_path / "seed4" / "avff_plain")
    held = results.settings_of(args, "avff", tmp_path, 4, run="avff-without-face_blend",
                               exclude_manipulations=["face_blend"])  # fmt: skip
    assert held.output_dir == str(tmp_path / "avff-without-face_blend") and held.exclude_manipulations == (
        "face_blend",
    )
    assert results.settings_of(args, "video_only").fusion == "video_only"  # no --variant-set: the name is the head
    assert drawn_kinds(results.settings_of(args, "avff")) == PSEUDO_FAKE_KINDS
    assert drawn_kinds(results.settings_of(args, "avff_lipsync")) == ("audio_shift",)


def test_cells_are_marked_where_the_variant_drew_a_stand_in_of_the_rows_types():
    args, rng = _args(), np.random.default_rng(0)
    variants = ["avff", "avff_plain", "avff_lipsync"]
    per_seed = {}
    for s in range(2):
        per_seed[s] = {}
        for v in variants:
            rows = external_rows(rng, 1.0, s)
            per_seed[s][v] = {
                "rows": rows,
                "rows_last": external_rows(rng, 0.0, s),
                "prior": 0.86,
                "val_identities": 10,
            }
    marked = {v: stood_in(drawn_kinds(results.settings_of(args, v))) for v in variants}
    summary = summarise(per_seed, variants, 50, set(), marked)
    marked = {k for k, on in summary["stand_in"].items() if on}
    assert {("lipsync_offset", "avff"), ("all", "avff"), ("face_blend", "avff")} <= marked
    assert not {k for k in marked if k[1] == "avff_plain"}  # no pseudo-fakes: nothing to label
    assert {k[0] for k in marked if k[1] == "avff_lipsync"} == {"lipsync_offset", "all", "audio-visual fakes"}
    table = "\n".join(results._table(summary))
    lipsync_row = next(line for line in table.splitlines() if line.startswith("| lipsync_offset"))
    assert lipsync_row.count(results.STAND_IN_MARK) == 2  # avff and avff_lipsync, not avff_plain
    pitch_row = next(line for line in table.splitlines() if line.startswith("| audio_pitch"))
    assert pitch_row.count(results.STAND_IN_MARK) == 1  # avff only
    assert "## Best or last checkpoint" in "\n".join(results._last_table(summary))


def test_each_seed_draws_its_external_set_from_its_own_slice():
    args = SimpleNamespace(seed=4, seeds=3)
    assert [results.external_slice(args, s) for s in (4, 5, 6)] == [(0, 3), (1, 3), (2, 3)]


def test_the_targets_table_holds_issue_22s_rows_against_their_variants():
    """The paper's model (avff_nosignals) per lip-sync type against 0.90, the main variant against the hand-made
    statistics measured in the same run, and its log loss against the prior's minus 0.05."""
    rng = np.random.default_rng(1)
    variants = ["avff", "avff_nosignals", "lip_sync", "sharpness"]
    signal = {"avff": 4.0, "avff_nosignals": 0.0, "lip_sync": 4.0, "sharpness": 0.0}
    per_seed = {s: {v: {"rows": (r := external_rows(rng, signal[v], s)), "rows_last": r, "prior": 0.86, "val_identities": 10}
                    for v in variants} for s in range(2)}  # fmt: skip
    summary = summarise(per_seed, variants, 20, set(), {})
    table = "\n".join(results._targets(summary, "avff"))
    paper = [line for line in table.splitlines() if line.startswith("| the paper's model (`avff_nosignals`)")]
    assert len(paper) == 3 and all(line.endswith("| no |") for line in paper)  # no signal: below 0.90
    mine = next(line for line in table.splitlines() if line.startswith("| `avff`: lipsync_offset"))
    assert "≥ the hand-made statistic (" in mine and "log loss, all" in table
    without = summarise({s: {v: per_seed[s][v] for v in ("avff", "lip_sync")} for s in per_seed},
                        ["avff", "lip_sync"], 20, set(), {})  # fmt: skip
    assert "| not run | no |" in "\n".join(results._targets(without, "avff"))


def test_a_variant_its_settings_refuse_stops_the_command_before_any_data_is_made(tmp_path, capsys):
    out = tmp_path / "out"
    for argv, why in ((["--variants", "avff_concat", "no_such_head"], "unknown fusion 'no_such_head'"),
                      (["--variant-set", 'v={"seed": 3}', "--variants", "v"], "may not override ['seed']")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            results.main([*argv, "--out", str(out)])
        assert stop.value.code == 2 and why in capsys.readouterr().err and not out.exists()


def test_score_only_opens_no_parent_run_and_makes_no_store(tmp_path):
    with results.seed_parent(_args(score_only=True), tmp_path, 0, {}) as parent:
        assert parent is None
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # ingest is a Prefect flow: a temporary Prefect server starts
def test_the_command_at_its_smallest_sizes_from_the_repo_root_writes_scores_and_the_doc(tmp_path):
    out, doc = tmp_path / "out", tmp_path / "results.md"
    cmd = [sys.executable, "bench/results.py", "--seeds", "1", "--n-real", "10", "--n-val", "2",
           "--n-real-external", "2", "--duration", "3.5", "--pretrain-epochs", "1", "--epochs", "1", "--probes", "1",
           "--bootstrap", "20", "--variants", "avff_concat", "video_only", "--out", str(out), "--doc", str(doc)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true"}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=1200)
    external = {p.stem for p in (out / "seed0" / "external").rglob("*.mp4")}
    for variant in ("avff_concat", "video_only"):
        scores = json.loads((out / "seed0" / variant / "scores.json").read_text())
        assert {r["video_id"] for r in scores["rows"]} == external and len(scores["rows_last"]) == len(external)
        assert all(0.0 <= r["p_fake"] <= 1.0 for r in scores["rows"] if r["reason"] is None)
        assert 0.0 < scores["prior"] < 1.0 and scores["probes"]  # the first seed's probes ran
    text = doc.read_text()
    assert text.startswith("# Results on the generator's benchmark") and "`python bench/results.py --seeds 1" in text
    table = text[text.index("## Every variant, per manipulation type") :]
    assert "| **all** |" in table and "## Is the signal there?" in text  # bench/av_signal.py's table, imported
    assert "**avff_concat vs video_only**" in text  # the paired comparison of the audio-visual and uni-modal heads
    # the variants trained as avff ablate's: child runs of the seed's parent, in a store under --out
    from mlflow import MlflowClient

    store = MlflowClient(f"sqlite:///{out / 'seed0' / 'mlflow.db'}")
    runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
    children = {r.data.tags["avff.variant"]: r for r in runs if "avff.variant" in r.data.tags}
    assert set(children) == {"avff_concat", "video_only"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {
        r.info.run_id for r in runs if r.data.tags.get("avff.experiment") == "benchmark"
    }
    assert all(r.info.artifact_uri.startswith((out / "seed0" / "mlartifacts").as_uri()) for r in runs)


def test_parallel_seeds_make_their_shared_stage_1_data_one_at_a_time(tmp_path):
    """Two holders of the pretrain lock never overlap: the second waits until the first lets go (parallel
    --only-seed processes would otherwise write the same pretrain_data and pretrain_shards at once)."""
    import threading
    import time

    spans, ready = [], threading.Event()

    def hold(name: str) -> None:
        with results.exclusive(tmp_path / "pretrain.lock"):
            start = time.monotonic()
            ready.set()
            time.sleep(0.3)
            spans.append((name, start, time.monotonic()))

    first = threading.Thread(target=hold, args=("first",))
    first.start()
    ready.wait()
    second = threading.Thread(target=hold, args=("second",))
    second.start()
    first.join()
    second.join()
    (a, a0, a1), (b, b0, b1) = sorted(spans, key=lambda x: x[1])
    assert (a, b) == ("first", "second") and b0 >= a1
