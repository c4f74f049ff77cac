"""metadata.json that is not what it claims, and folders that cannot work: refused, never a hang
or a crash; a run that ingests nothing fails; refusals are counted, not logged one by one."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tasks.ingest.scan import refusal_counts, scan_dfdc

VIDEOS = ("a.mp4", "b.mp4")


@contextmanager
def _deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block blocks, e.g. opening a FIFO."""

    def expire(*_):
        raise TimeoutError(f"still blocked after {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _part(root: Path) -> Path:
    part = root / "dfdc_train_part_0"
    part.mkdir(parents=True)
    for name in VIDEOS:
        (part / name).write_bytes(name.encode() * 16)  # distinct bytes: a byte-identical copy is a duplicate
    return part


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _deep(path: Path) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a\xff\xfe.mp4"}}')


def _loop(path: Path) -> None:
    path.symlink_to(path.name)  # metadata.json -> metadata.json


def _nan(path: Path) -> None:
    path.write_text('{"a.mp4": {"label": "REAL", "split": NaN}, "b.mp4": {"label": "REAL"}}')


def _infinity(path: Path) -> None:
    path.write_text('{"a.mp4": {"label": "REAL", "score": -Infinity}, "b.mp4": {"label": "REAL"}}')


def _bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "REAL"}}')


def _huge_string(path: Path) -> None:
    path.write_text('{"a.mp4": {"label": "REAL", "note": "' + "x" * 50_000_000 + '"}, "b.mp4": {"label": "REAL"}}')


# Issue 27's cases: Python's json took ``NaN`` (the video was ingested) while a byte order mark was
# refused as invalid JSON, and a 50 MB string was read whole. One rule now, strict JSON (RFC 8259,
# capped in size), refused like every other unreadable metadata file, naming the cause.
@pytest.mark.parametrize(
    "make, why",
    [(_fifo, "is a FIFO"), (_directory, "is a directory"), (_deep, "nested too deep"), (_not_utf8, "not valid UTF-8"),
     (_loop, "cannot open"), (_nan, "NaN is not a JSON value"), (_infinity, "-Infinity is not a JSON value"),
     (_bom, "byte order mark"), (_huge_string, "larger than the 32 MiB")],
    ids=["fifo", "directory", "nested_100k", "not_utf8", "symlink_loop", "nan", "infinity", "bom", "50mb_string"],
)  # fmt: skip
def test_metadata_that_is_not_a_json_file_refuses_its_videos_without_hanging_or_crashing(tmp_path, make, why):
    part = _part(tmp_path)
    make(part / "metadata.json")
    with _deadline(30):
        result = scan_dfdc(str(tmp_path))
    assert result.entries == []
    assert sorted(r.rel_path for r in result.rejected) == [f"dfdc_train_part_0/{v}" for v in VIDEOS]
    for r in result.rejected:
        assert r.reason == "bad_metadata" and "metadata.json" in r.error and why in r.error, r


def test_a_key_given_twice_with_different_labels_is_refused_not_guessed(tmp_path):
    """json keeps the last duplicate silently; the scan refuses the entry instead (identical
    repeats are harmless and kept), and a field repeated inside one entry is refused too."""
    part = _part(tmp_path)
    (part / "c.mp4").write_bytes(b"\0" * 64)
    (part / "metadata.json").write_text(
        '{"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"},'
        ' "a.mp4": {"label": "FAKE", "original": "b.mp4"},'
        ' "b.mp4": {"label": "FAKE", "original": "a.mp4"},'
        ' "c.mp4": {"label": "REAL", "label": "FAKE"}}'
    )
    result = scan_dfdc(str(tmp_path))
    assert [e.rel_path for e in result.entries] == ["dfdc_train_part_0/b.mp4"]
    refused = {r.rel_path.rsplit("/", 1)[1]: r for r in result.rejected}
    assert set(refused) == {"a.mp4", "c.mp4"}
    assert (
        refused["a.mp4"].reason == "bad_metadata" and "more than once with different entries" in refused["a.mp4"].error
    )
    assert refused["c.mp4"].reason == "bad_metadata" and "label" in refused["c.mp4"].error


def test_100k_entries_without_files_cost_one_listing_not_a_stat_each(tmp_path, monkeypatch):
    """Entries whose files are missing are found from one directory listing per part; the
    refusals are counted per reason (what the flow logs instead of one line per file)."""
    part = _part(tmp_path)
    meta = {f"gone_{i:06d}.mp4": {"label": "REAL"} for i in range(100_000)}
    meta.update({v: {"label": "REAL"} for v in VIDEOS})
    (part / "metadata.json").write_text(json.dumps(meta))
    calls = {"n": 0}
    for name in ("stat", "lstat"):
        real = getattr(os, name)

        def counting(*args, _real=real, **kwargs):
            calls["n"] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, counting)  # a spy: every call still reaches the real syscall
    result = scan_dfdc(str(tmp_path))
    monkeypatch.undo()
    assert sorted(e.rel_path for e in result.entries) == [f"dfdc_train_part_0/{v}" for v in VIDEOS]
    assert len(result.rejected) == 100_000 and {r.reason for r in result.rejected} == {"missing_file"}
    assert calls["n"] < 100, f"{calls['n']} stat calls for 100,000 missing entries"
    counts = refusal_counts(result.rejected)
    assert list(counts) == ["missing_file"] and counts["missing_file"][0] == 100_000
    assert counts["missing_file"][1].startswith("dfdc_train_part_0/gone_000000.mp4: listed in metadata.json")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.slow  # starts a Prefect server
def test_a_run_whose_every_video_is_refused_at_scan_fails_with_counts_not_a_line_per_file(
    tmp_path, ingest_config, prefect_server
):
    """5,000 listed files that are not there, and nothing else: the flow fails (it ingested
    nothing), names the reason with its count, logs a line per reason (not per file), and
    quarantine.parquet lists every file."""
    from flows.ingest import ingest_dfdc

    part = tmp_path / "dfdc" / "dfdc_train_part_0"
    part.mkdir(parents=True)
    (part / "metadata.json").write_text(json.dumps({f"gone_{i:05d}.mp4": {"label": "REAL"} for i in range(5000)}))
    out = tmp_path / "out"
    handler = _Records()
    logger = logging.getLogger("prefect.task_runs")
    logger.addHandler(handler)
    try:
        with pytest.raises(RuntimeError, match=r"none of the 5000 videos .* was ingested.*missing_file x 5000"):
            ingest_dfdc(ingest_config(tmp_path / "dfdc", out))
    finally:
        logger.removeHandler(handler)
    refusal_lines = [
        r.getMessage() for r in handler.records if r.levelno >= logging.WARNING and "refused" in r.getMessage()
    ]
    assert len(refusal_lines) == 1 and "missing_file x 5000" in refusal_lines[0], refusal_lines[:5]
    rows = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert len(rows) == 5000 and {r["reason"] for r in rows} == {"missing_file"}


def _cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=Path(__file__).resolve().parents[2])  # fmt: skip


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " error: " in line or line.startswith("error:")]


@pytest.mark.slow  # starts a Prefect server
def test_an_ingest_of_nothing_usable_exits_non_zero_with_one_error_line(tmp_path, flow_env):
    """Not-UTF-8 metadata refuses every video before decoding: `avff ingest` exits 1 with one
    line naming the reason; no traceback without --debug."""
    part = _part(tmp_path / "dfdc")
    _not_utf8(part / "metadata.json")
    out = _cli("ingest", "--data", str(tmp_path / "dfdc"), "--out", str(tmp_path / "out"), "--executor", "local",
               env={**flow_env, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    (line,) = _error_lines(out.stderr)
    assert line.startswith("avff ingest: error: none of the 2 videos") and "bad_metadata x 2" in line, line
    assert "not valid UTF-8" in line


def test_an_output_folder_inside_the_input_folder_is_refused(tmp_path, ingest_config):
    from tasks.ingest.settings import IngestSettings

    data = tmp_path / "dfdc"
    _part(data)
    with pytest.raises(ValidationError, match="is inside the input folder"):
        ingest_config(data, data / "shards")
    with pytest.raises(ValidationError, match="is inside the input folder"):
        IngestSettings(data=str(data), out=str(data))
    ingest_config(data, tmp_path / "shards")  # beside it: fine
    out = _cli("ingest", "--data", str(data), "--out", str(data / "dfdc_train_part_0" / "out"), timeout=300)
    # a usage error, like train's: exit 2 before any flow run, one line even under --debug
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.startswith("avff ingest: error: output folder") and "is inside the input folder" in out.stderr
    assert not (data / "dfdc_train_part_0" / "out").exists()
    debug = _cli("--debug", "ingest", "--data", str(data), "--out", str(data / "out"), timeout=300)
    assert debug.returncode == 2 and "is inside the input folder" in debug.stderr


def test_one_file_is_one_video_links_and_copies_are_duplicates_of_the_first(tmp_path):
    """Issue 27: a symlink to another video of the data folder, a hard link and a byte-identical
    copy under another name were ingested as further videos, each its own group, so the same
    footage could sit in train and in val. Now each is refused ``duplicate_of`` naming the video
    it repeats (the plain file is kept even when the link is listed first); a fake made from a
    copy joins the kept video's group, so all of it lands in one split."""
    from tasks.ingest.splits import assign_splits

    part = tmp_path / "dfdc_train_part_0"
    part.mkdir()
    footage = os.urandom(3 << 20)  # over 64 KiB: the whole-file digest decides, not the head alone
    (part / "orig.mp4").write_bytes(footage)
    (part / "link.mp4").symlink_to("orig.mp4")
    os.link(part / "orig.mp4", part / "hard.mp4")
    (part / "copy.mp4").write_bytes(footage)
    (part / "other.mp4").write_bytes(footage[:-1] + bytes([footage[-1] ^ 1]))  # same size, last byte differs
    (part / "fake.mp4").write_bytes(os.urandom(1000))
    (part / "metadata.json").write_text(json.dumps({
        "link.mp4": {"label": "REAL"}, "orig.mp4": {"label": "REAL"}, "hard.mp4": {"label": "REAL"},
        "copy.mp4": {"label": "REAL"}, "other.mp4": {"label": "REAL"},
        "fake.mp4": {"label": "FAKE", "original": "copy.mp4"}}))  # fmt: skip
    result = scan_dfdc(str(tmp_path))
    assert sorted(e.video_id for e in result.entries) == ["fake", "orig", "other"]
    refused = {r.rel_path.rsplit("/", 1)[1]: r for r in result.rejected}
    assert set(refused) == {"link.mp4", "hard.mp4", "copy.mp4"}
    for name, how in (("link.mp4", "a symlink"), ("hard.mp4", "a hard link"), ("copy.mp4", "the same bytes")):
        assert refused[name].reason == "duplicate_of", refused[name]
        assert "the same video as dfdc_train_part_0/orig.mp4" in refused[name].error and how in refused[name].error
    assert {e.video_id: e.original for e in result.entries}["fake"] == "orig"
    assert result.missing_originals == []
    placed = assign_splits(result.entries, ratios=(0.5, 0.25, 0.25), seed=0)
    assert placed["fake"].group == placed["orig"].group and placed["fake"].split == placed["orig"].split


def test_an_output_folder_that_is_a_file_is_refused_in_one_specific_line(tmp_path):
    """Issue 27: ``--out`` naming an existing file failed inside the flow with a bare
    ``FileExistsError``. Now the settings refuse it (ingest and train), saying which path is a file."""
    from tasks.ingest.settings import IngestSettings
    from tasks.train.settings import TrainSettings

    data = tmp_path / "dfdc"
    _part(data)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(ValidationError, match=f"output folder {afile} is an existing file, not a folder"):
        IngestSettings(data=str(data), out=str(afile))
    with pytest.raises(ValidationError, match=f"output folder {afile}/sub cannot be made: {afile} is a file"):
        IngestSettings(data=str(data), out=str(afile / "sub"))
    with pytest.raises(ValidationError, match=f"output folder {afile} is an existing file, not a folder"):
        TrainSettings(data=str(tmp_path), output_dir=str(afile))
    IngestSettings(data=str(data), out=str(tmp_path / "new" / "out"))  # not there yet: fine
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.parquet").touch()
    out = _cli("train", "--data", str(tmp_path / "shards"), "--out", str(afile), timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    (line,) = _error_lines(out.stderr)
    assert line.startswith("avff train: error: --out: ") and "is an existing file, not a folder" in line
    assert afile.read_text() == "not a folder"
