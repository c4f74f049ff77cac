"""Faults during ingest: a killed Ray worker, a Ray task that raises, a full disk, two runs at once.

Every case ends with a rerun (or the same run, after Ray's retries) whose shards are
byte-identical to those of an uninterrupted run (shards.parquet sha256 per relative path),
with nothing partial ever visible under the output root. Covered elsewhere: kill -9 of the
Prefect flow process (tests/flows/test_ingest_flow.py::test_killed_run_resumes_to_identical_shards)
and, fast, of one bare unit (tests/tasks/ingest/test_units.py).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

VIDEOS_PER_SHARD = 1  # 4 videos -> 4 units, so a fault hits one unit and spares the others


def _shard_hashes(out: Path) -> dict[str, str]:
    return {os.path.relpath(r["path"], out): r["sha256"] for r in pq.read_table(out / "shards.parquet").to_pylist()}


def _visible_partials(out: Path) -> list[Path]:
    """Anything under shards/ that is not a complete shard with its record."""
    found = []
    for p in (out / "shards").rglob("*"):
        if p.is_dir():
            continue
        if p.name.endswith(".tar") and Path(str(p) + ".json").exists():
            continue
        if p.name.endswith(".tar.json") and Path(str(p)[: -len(".json")]).exists():
            continue
        found.append(p)
    return found


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """4 good videos (2 REAL + a face-swap of each) in 2 parts, 4 s each: one clip per video."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    return make_dfdc_sample(tmp_path_factory.mktemp("clean") / "data", n_real=2, parts=2, duration_s=4.0,
                            size=(160, 160), seed=5, manipulations=("face_blend",))  # fmt: skip


@pytest.fixture(scope="module")
def reference(clean, ingest_config, tmp_path_factory, flow_env) -> dict[str, str]:
    """Shard hashes of an uninterrupted in-process run (the Ray fan-out gives the same bytes:
    tests/flows/test_ingest_flow.py::test_ray_fanout_gives_identical_shards)."""
    from flows.ingest import ingest_dfdc

    out = tmp_path_factory.mktemp("reference") / "out"
    result = ingest_dfdc(ingest_config(clean, out, videos_per_shard=VIDEOS_PER_SHARD))
    assert result["ingested"] == 4 and result["shards"] == 4
    return _shard_hashes(out)


def _cli(clean: Path, out: Path) -> list[str]:
    """The `avff ingest` command with the reference's settings."""
    return [sys.executable, "-m", "flows.cli", "ingest", "--data", str(clean), "--out", str(out), "--executor", "local",
            "--face-size", "64", "--videos-per-shard", str(VIDEOS_PER_SHARD), "--ratios", "0.6", "0.2", "0.2"]  # fmt: skip


# --------------------------------------------------------------------------- Ray


def _ray_head_pid(procs) -> int:
    """The `ray start --head` process the ray_address fixture started (a child of this pytest)."""
    heads = [p for p in procs.descendants(os.getpid()) if "ray start --head" in procs.cmdline(p)]
    assert len(heads) == 1, heads
    return heads[0]


class _WorkerKiller(threading.Thread):
    """kill -9 the first Ray actor seen writing a unit; only workers under our own Ray head."""

    def __init__(self, procs, head: int):
        super().__init__(daemon=True)
        self.procs, self.head = procs, head
        self.killed: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for pid in self.procs.descendants(self.head):
                title = self.procs.cmdline(pid)
                if title.startswith("ray::RayUnitWorker.write") and self.procs.kill9(pid):
                    self.killed = f"{pid} {title}"
                    return
            time.sleep(0.05)


def test_a_ray_worker_killed_mid_unit_is_retried_to_identical_shards(ray_address, clean, reference, ingest_config,
                                                                     procs, tmp_path):  # fmt: skip
    from flows.ingest import ingest_dfdc

    killer = _WorkerKiller(procs, _ray_head_pid(procs))
    killer.start()
    out = tmp_path / "out"
    try:
        result = ingest_dfdc(ingest_config(clean, out, videos_per_shard=VIDEOS_PER_SHARD, executor="ray",
                                           ray_address=ray_address))  # fmt: skip
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed, "no worker was caught running a unit"
    assert result["quarantined"] == 0 and result["ingested"] == 4  # the actor restarted and re-ran its unit
    assert _shard_hashes(out) == reference
    assert not _visible_partials(out)


@pytest.fixture(scope="module")
def raising_run(ray_address, clean, reference, ingest_config, tmp_path_factory):
    """The shard directory of one split is taken by a file: that split's units raise on every
    Ray retry while the others finish. Then the file is removed and the run repeated.

    Returns (failed unit paths, first result, its quarantine rows, shard hashes after the
    first run, rerun result, output root)."""
    from flows.ingest import ingest_dfdc

    out = tmp_path_factory.mktemp("raising") / "out"
    blocked = sorted({Path(p).parts[1] for p in reference})[0]  # e.g. "train"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / blocked).write_text("not a directory")
    config = ingest_config(clean, out, videos_per_shard=VIDEOS_PER_SHARD, executor="ray", ray_address=ray_address)
    with pytest.raises(RuntimeError, match="shards failed after retries") as failure:
        ingest_dfdc(config)  # the run fails loudly, after writing the indexes of what worked
    first = {"quarantined": len(pq.read_table(out / "quarantine.parquet")), "error": str(failure.value)}
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    hashes = _shard_hashes(out)
    (out / "shards" / blocked).unlink()
    rerun = ingest_dfdc(config)
    return {p for p in reference if Path(p).parts[1] == blocked}, first, quarantine, hashes, rerun, out


def test_a_ray_task_that_raises_fails_only_its_unit_and_the_rerun_completes(raising_run, reference):
    failed_units, first, quarantine, hashes, rerun, out = raising_run
    assert first["quarantined"] == len(quarantine) == len(failed_units)
    assert {q["reason"] for q in quarantine} == {"worker_failed"}
    for q in quarantine:  # which video, which unit
        assert q["rel_path"] in q["error"] and any(os.path.basename(u) in q["error"] for u in failed_units), q
    assert hashes == {p: h for p, h in reference.items() if p not in failed_units}  # the others are whole
    assert rerun["skipped_units"] == len(reference) - len(failed_units) and rerun["quarantined"] == 0
    assert _shard_hashes(out) == reference
    assert not _visible_partials(out)


def test_a_ray_task_that_raises_is_reported_with_its_cause(raising_run):
    _, first, quarantine, _, _, _ = raising_run
    assert "File exists" in first["error"] or "Not a directory" in first["error"], first["error"]
    for q in quarantine:
        assert "File exists" in q["error"] or "Not a directory" in q["error"], q["error"]


# --------------------------------------------------------------------------- disk full


def _limit_file_size(limit: int):
    def apply():  # in the child, before exec: every file it writes is capped (EFBIG past it)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_while_writing_shards_leaves_nothing_partial_and_reruns_identically(clean, reference, ingest_config,
                                                                                     flow_env, tmp_path):  # fmt: skip
    """`avff ingest` with every file capped at 64 KiB (a shard is ~110 KiB, the parquet files
    ~10 KiB): every shard write fails with EFBIG, the failures are reported per unit, nothing
    partial is visible, no temp file is left; the same command without the cap completes."""
    from flows.ingest import ingest_dfdc

    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    env = {**flow_env, "TMPDIR": str(tmp)}
    full = subprocess.run(_cli(clean, out), env=env, preexec_fn=_limit_file_size(64 * 1024), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert full.returncode != 0 and "shards failed after retries" in full.stderr, full.stderr[-3000:]
    assert pq.read_table(out / "shards.parquet").num_rows == 0
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert {q["reason"] for q in quarantine} == {"worker_failed"}
    assert all("File too large" in q["error"] and q["rel_path"] in q["error"] for q in quarantine), quarantine
    assert not _visible_partials(out) and not list(tmp.iterdir())

    rerun = ingest_dfdc(ingest_config(clean, out, videos_per_shard=VIDEOS_PER_SHARD))
    assert rerun["quarantined"] == 0 and _shard_hashes(out) == reference
    assert not _visible_partials(out)


# --------------------------------------------------------------------------- two writers


def _lock_holder(out: Path, candidates: list[subprocess.Popen], timeout: float = 300) -> subprocess.Popen:
    """The process whose pid the output lock names (it writes its pid once it holds the flock)."""
    lock = out / ".ingest.lock"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:  # "pid N on host H since T, command: ..." (storage.fs.exclusive_lock)
            pid = int(re.match(r"pid (\d+)", lock.read_text()).group(1))
        except (OSError, AttributeError):
            pid = 0
        for p in candidates:
            if p.pid == pid:
                return p
        if all(p.poll() is not None for p in candidates):
            break
        time.sleep(0.02)
    raise AssertionError(f"neither ingest took the lock: {[p.poll() for p in candidates]}")


def test_two_ingests_on_one_output_one_refuses_and_nothing_is_corrupted(clean, reference, flow_env, tmp_path):
    """Two real `avff ingest` processes on the same output. The first to take the lock is
    frozen (SIGSTOP) while it holds it, so the second certainly arrives mid-run; it must
    refuse with a clear message. Thawed, the first completes with the reference output."""
    out = tmp_path / "out"
    cmd = _cli(clean, out)
    runs = [subprocess.Popen(cmd, env=flow_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    try:
        holder = _lock_holder(out, runs)
        os.kill(holder.pid, signal.SIGSTOP)
        other = next(p for p in runs if p is not holder)
        _, err = other.communicate(timeout=300)
        assert other.returncode != 0
        assert f"another ingest is writing to {out}" in err and f"held by pid {holder.pid}" in err, err[-3000:]
        os.kill(holder.pid, signal.SIGCONT)
        stdout, err = holder.communicate(timeout=300)
        assert holder.returncode == 0, err[-3000:]
    finally:
        for p in runs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
    assert json.loads(stdout[stdout.index("{") :])["shards"] == len(reference)
    assert _shard_hashes(out) == reference
    assert not _visible_partials(out)
