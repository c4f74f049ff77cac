"""`avff predict` and model loading under hostile input: bad paths among good videos, a
checkpoint whose config asks for a huge model, and many videos at once."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from avff_model import AVFF
from avff_model.config import get_config
from storage.checkpoint import CheckpointError, load_weights, save_checkpoint
from tasks.serve.scorer import checked_config, load_model

ROOT = Path(__file__).resolve().parents[2]
CLIP_S = 3.5  # one 3.2 s clip at the tiny model's 16 frames / 5 fps


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny AVFF (random weights) as predict loads it: safetensors with its config inside."""
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = AVFF(cfg)
    directory = save_checkpoint(str(tmp_path_factory.mktemp("model") / "ckpt"), model, dataclasses.asdict(cfg), {})
    return Path(directory) / "model.safetensors"


@pytest.fixture(scope="module")
def short_video(footage, media, tmp_path_factory) -> Path:
    """3.5 s of the talking face with its speech: one clip, cheap to score."""
    n = int(CLIP_S * media.fps)
    path = tmp_path_factory.mktemp("videos") / "talk.mp4"
    return media.write_av(path, footage.a[:n], audio=footage.audio[: int(CLIP_S * media.audio_rate)])


def _predict(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "predict", *args, "--device", "cpu", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)  # fmt: skip


def test_bad_paths_among_good_videos_are_reported_by_name_and_the_exit_status_says_so(weights, short_video, tmp_path):
    """A missing file, a symlink loop and a directory between two good videos: both good ones
    are scored, each bad one gets a row with its stable reason, and the command exits 1."""
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop.name)
    (tmp_path / "folder.mp4").mkdir()
    args = [str(short_video), str(tmp_path / "missing.mp4"), str(loop), str(tmp_path / "folder.mp4"), str(short_video)]
    proc = _predict(*args, "--model", str(weights))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "3 of 5 videos could not be scored" in err, err[-3000:]
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["video"] for r in rows] == args
    assert all(0.0 <= rows[i]["p_fake"] <= 1.0 and rows[i]["clips"] == 1 for i in (0, 4))
    assert rows[0]["p_fake"] == rows[4]["p_fake"]
    reasons = {Path(r["video"]).name: (r["reason"], r["error"]) for r in rows[1:4]}
    assert reasons["missing.mp4"][0] == "missing_file" and "missing.mp4" in reasons["missing.mp4"][1]
    assert reasons["loop.mp4"][0] == "unreadable" and "symbolic links" in reasons["loop.mp4"][1]
    assert reasons["folder.mp4"][0] == "unreadable" and "not a regular file" in reasons["folder.mp4"][1]


_LOAD_HUGE = """
import resource, sys, time
from tasks.serve.scorer import load_model
from storage.checkpoint import CheckpointError
# from here on, at most 1 GiB more address space: a model of 13 GB cannot be allocated by mistake
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
t0 = time.perf_counter()
try:
    load_model(sys.argv[1], device="cpu")
    print("loaded")
except CheckpointError as e:
    print(f"refused in {time.perf_counter() - t0:.2f}s: {e}")
"""


def test_a_tiny_file_asking_for_a_huge_model_is_refused_before_building_it(tmp_path):
    """About a kilobyte of safetensors (its config is most of it) whose config asks for width 32768 and depth 64 (~13 GB): refused
    from the config alone, in well under a second, without allocating the model (the check runs
    under an address-space limit that such a model would break)."""
    config = {**dataclasses.asdict(get_config("tiny")), "video_width": 32768, "video_depth": 64,
              "audio_width": 32768, "audio_depth": 64}  # fmt: skip
    path = tmp_path / "huge.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"avff_config": json.dumps(config)})
    assert path.stat().st_size < 2000
    out = subprocess.run([sys.executable, "-c", _LOAD_HUGE, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip()
    assert line.startswith("refused in ") and "video_width=32768 is outside" in line, line
    assert float(line.split()[2].rstrip("s:")) < 1.0, line


def test_a_config_that_does_not_match_its_tensors_is_refused_and_a_true_one_loads(weights, tmp_path):
    tensors, config, _ = load_weights(str(weights))
    model = load_model(str(weights), device="cpu")  # the true pair loads
    assert all(torch.equal(model.model.state_dict()[k], v) for k, v in tensors.items())
    with pytest.raises(CheckpointError, match="of another shape"):
        checked_config({**config, "video_width": 128}, tensors)  # within bounds, but not these tensors
    with pytest.raises(CheckpointError, match=r"\d+ missing"):
        checked_config(config, {"x": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="unknown fields"):
        checked_config({**config, "exec": "rm -rf /"}, tensors)
    with pytest.raises(CheckpointError, match="video_depth=True"):
        checked_config({**config, "video_depth": True}, tensors)
    lying = tmp_path / "lying.safetensors"
    save_file(tensors, str(lying), metadata={"avff_config": json.dumps({**config, "audio_width": 128})})
    with pytest.raises(CheckpointError, match="do not match their model config"):
        load_model(str(lying), device="cpu")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024


@pytest.mark.slow
def test_fifty_videos_stream_one_line_each_with_bounded_memory(weights, short_video, tmp_path):
    """50 videos (symlinks to one): a JSON line per video as soon as it is scored, and memory
    that does not grow with the number of videos (resident size at the 10th and 49th line)."""
    videos = []
    for i in range(50):
        link = tmp_path / f"v{i:02d}.mp4"
        link.symlink_to(short_video)
        videos.append(str(link))
    t0 = time.perf_counter()
    proc = _predict(*videos, "--model", str(weights))
    rows, rss, first_line_while_running = [], {}, None
    for line in proc.stdout:
        rows.append(json.loads(line))
        if len(rows) == 1:
            first_line_while_running = proc.poll() is None
        if len(rows) in (10, 49):
            rss[len(rows)] = _rss_mb(proc.pid)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, err[-3000:]
    assert [r["video"] for r in rows] == videos and first_line_while_running
    assert len({r["p_fake"] for r in rows}) == 1  # the same video scores the same every time
    growth = rss[49] - rss[10]
    print(f"50 videos in {seconds:.0f}s; resident {rss[10]:.0f} MB at video 10, {rss[49]:.0f} MB at video 49")
    assert growth < 100, f"memory grew {growth:.0f} MB over 39 videos ({rss})"
