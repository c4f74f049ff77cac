"""deployments/screenshots.py's helpers that need no browser: the PNG size bound and the page's video."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from deployments.screenshots import demo_fake, save_png


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def test_a_png_over_the_bound_is_resaved_with_a_palette_and_one_under_it_is_kept(tmp_path):
    rng = np.random.default_rng(0)
    # a screenshot-like picture: flat panels and a little noise in 8 shades of each channel
    rgb = (rng.integers(0, 8, (300, 400, 3)) * 32).astype(np.uint8)
    rgb[:, :200] = (240, 240, 240)
    png = _png(rgb)
    size = save_png(png, tmp_path / "big.png", max_bytes=len(png) - 1)
    shrunk = Image.open(tmp_path / "big.png")
    assert size == (tmp_path / "big.png").stat().st_size < len(png) and shrunk.mode == "P"
    assert shrunk.size == (400, 300)
    assert save_png(png, tmp_path / "kept.png", max_bytes=len(png)) == len(png)
    assert (tmp_path / "kept.png").read_bytes() == png


def test_the_page_gets_a_fake_listed_in_the_samples_metadata(tmp_path):
    part = tmp_path / "dfdc_train_part_0"
    part.mkdir()
    meta = {
        "a.mp4": {"label": "REAL"},
        "b.mp4": {"label": "FAKE", "original": "a.mp4"},
        "0gone.mp4": {"label": "FAKE", "original": "a.mp4"},
    }  # fmt: skip  (sorts first, not on disk)
    (part / "metadata.json").write_text(json.dumps(meta))
    for name in ("a.mp4", "b.mp4"):
        (part / name).write_bytes(b"")
    assert demo_fake(tmp_path) == part / "b.mp4"
