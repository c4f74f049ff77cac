"""Ingest's frames reuse memory from one video to the next (issue 26: page faults on fresh memory
cost more than the conversion). Each case runs in its own process: the setting is process-wide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FRAMES, PAGES_PER_FRAME = 48, 1920 * 1080 * 3 // 4096  # a video's picked frames; a 1080p RGB frame's pages
# converts a video's 48 frames twice, each time holding them all and then freeing them, as ingest does,
# and prints (whether the setting took, the minor page faults of the second video)
VIDEO_TWICE = """
import resource, sys
import av, numpy as np
from tasks.ingest.video import RGBConverter, keep_frame_memory
kept = keep_frame_memory() if sys.argv[1] == "keep" else None
frame = av.VideoFrame.from_ndarray(np.full((1080, 1920, 3), 90, np.uint8), format="rgb24").reformat(format="yuv420p")
to_rgb = RGBConverter()
def video():
    frames = [to_rgb(frame) for _ in range(int(sys.argv[2]))]  # N x (1080, 1920, 3)
    return len(frames)
video()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
video()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_video_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", VIDEO_TWICE, mode, str(FRAMES)], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    return out[0], int(out[1])


def test_after_keep_frame_memory_the_next_video_s_frames_reuse_the_last_one_s_pages():
    """Without the setting, whether the pages go back to the kernel depends on the heap's state: in ingest's
    worker they did, every video (~73,000 faults, docs/performance.md); in a bare process, sometimes."""
    kept, faults = _second_video_faults("keep")
    if kept != "True":
        pytest.skip("keep_frame_memory needs glibc's mallopt")
    whole = FRAMES * PAGES_PER_FRAME  # ~73,000: every page of every frame faulted in again
    # measured here: 1 to 3 frames' pages (the heap's layout varies from process to process)
    assert faults < whole // 4, f"{faults} page faults for a video whose frames could reuse the last one's pages"
