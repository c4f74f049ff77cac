"""Issue 25: a person drops a video on the page (`avff web`, a real server on 127.0.0.1) in headless
Chromium and reads the verdict `avff predict` gives; a non-video and an oversized file are refused
on the page with the reason and the file's name.

The videos are real DFDC clips from ../shared/data when that folder is here; on a clean clone (CI)
they are DFDC-format videos the generator writes (a talking face with its audio track), so the
page is tested in the browser either way."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from avff_model import AVFF, get_config
from deployments.stack import free_port, wait_for_port
from tests.processes import stop
from storage.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "dfdc_sample"
CHROMIUM = os.environ.get("AVFF_CHROMIUM", "/usr/bin/chromium")


def _chromium_or_skip():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (deployments/test.sh installs it with apt when run as root)")
    return pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")


def _generated_videos(root: Path) -> tuple[Path, Path]:
    """Two REAL videos of the generator in DFDC's format (H.264 + AAC, a face that speaks), the second larger."""
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    videos = []
    for name, size, seed in (("small", (128, 128), 0), ("large", (256, 256), 1)):
        folder = make_dfdc_sample(
            root / name, n_real=1, parts=0, duration_s=4.0, size=size, seed=seed, manipulations=()
        )
        (video,) = json.loads((folder / "metadata.json").read_text())
        videos.append(folder / video)
    return videos[0], videos[1]


def _sample_videos(tmp_path_factory) -> tuple[Path, Path]:
    """The smallest and the largest real DFDC clip when the shared data is here, else two generated videos."""
    if SAMPLE.is_dir():
        videos = sorted(SAMPLE.glob("*.mp4"), key=lambda p: p.stat().st_size)
        return videos[0], videos[-1]
    return _generated_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """`avff web` with a tiny random-weights model, uploads up to the smaller video's size + 1 KiB."""
    sync_api = _chromium_or_skip()
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = save_checkpoint(str(tmp_path_factory.mktemp("model") / "ckpt"), AVFF(cfg), dataclasses.asdict(cfg), {})
    small, large = _sample_videos(tmp_path_factory)
    assert large.stat().st_size > small.stat().st_size + 1024, (small, large)  # the large one must be refused
    port = free_port()
    log = open(tmp_path_factory.mktemp("logs") / "web.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "web", "--model", model, "--port", str(port),
                             "--max-bytes", str(small.stat().st_size + 1024)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for_port(port, proc, timeout=180, name="avff web")
        yield {"url": f"http://127.0.0.1:{port}/", "model": model, "small": small, "large": large, "sync_api": sync_api}
    finally:
        stop(proc)
        log.seek(0)
        print(log.read()[-3000:])


@pytest.fixture(scope="module")
def browser(page_server):
    with page_server["sync_api"].sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _drop(browser, url: str, path: Path, wait_for: str):
    page = browser.new_page()
    page.goto(url)
    page.set_input_files("#file", str(path))
    page.wait_for_selector(wait_for, timeout=600_000)
    return page


def test_a_dropped_video_shows_predicts_verdict_its_clips_and_faces(page_server, browser):
    video = page_server["small"]
    page = _drop(browser, page_server["url"], video, "#result:not([hidden])")
    shown, p_shown = page.inner_text("#verdict"), float(page.inner_text("#p_fake"))
    clips = page.query_selector_all("#timeline .clip")
    faces = page.query_selector_all("#timeline .clip img")
    # every face crop is a JPEG the browser decoded
    assert faces and all(img.evaluate("i => i.complete && i.naturalWidth > 0") for img in faces)
    # the drop zone sits below the intro, not over it (an inline <label> with padding overlapped its text)
    intro, drop = page.locator("p").first.bounding_box(), page.locator("#drop").bounding_box()
    assert intro["y"] + intro["height"] <= drop["y"]
    assert page.inner_text("#details").startswith(f"{video.name}: {len(clips)} clip{'' if len(clips) == 1 else 's'}, ")

    out = subprocess.run([sys.executable, "-m", "flows.cli", "predict", str(video), "--model", page_server["model"],
                          "--device", "cpu", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]

    (predicted,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert shown == predicted["verdict"] in ("FAKE", "REAL")
    assert p_shown == pytest.approx(predicted["p_fake"], abs=5e-4)  # shown with 3 decimals
    assert len(clips) == len(faces) == predicted["clips"]
    assert [float(c.get_attribute("data-p-fake")) for c in clips] == pytest.approx(predicted["clip_p_fake"], abs=1e-6)
    assert page.inner_text("#error") == ""


def test_a_non_video_and_an_oversized_video_are_refused_on_the_page_by_name(page_server, browser, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all")
    page = _drop(browser, page_server["url"], notes, "#error:not(:empty)")
    assert page.inner_text("#error").startswith("cannot score notes.mp4 (undecodable): notes.mp4: ")
    large = page_server["large"]
    page = _drop(browser, page_server["url"], large, "#error:not(:empty)")
    assert page.inner_text("#error").startswith(f"cannot score {large.name} (too_large): {large.name}: ")
    assert page.is_hidden("#result")


def test_the_page_binds_only_the_loopback_interface(page_server):
    with urllib.request.urlopen(page_server["url"] + "health", timeout=30) as r:
        assert r.read() == b"ok"
    port = int(page_server["url"].rsplit(":", 1)[1].strip("/"))
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = {line.split()[1] for line in listening if line.split()[3] == "0A"}  # LISTEN
    assert f"0100007F:{port:04X}" in local and f"00000000:{port:04X}" not in local
