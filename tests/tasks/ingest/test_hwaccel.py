"""GPU decode (``hwaccel="cuda"``, NVDEC through PyAV): bit for bit the CPU decode, or a clear error.

The bit-exactness test needs an NVIDIA GPU and skips without one; the switch itself (its refusal
of unknown names, its error on a machine without the device) is tested everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.ingest.preprocess import PreprocessConfig
from tasks.ingest.video import HWAccelUnavailable, VideoError, probe, read_frames

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "dfdc_sample"
CLIP = SHARED / "abofeumbvv.mp4"
TIMES = [s + i / 5 for s in (0.0, 3.2, 6.4) for i in range(16)]  # what ingest asks of a 10 s clip
GPU = Path("/dev/nvidiactl").exists()


def _clip() -> Path:
    if not CLIP.exists():
        pytest.skip(f"{CLIP} is absent (real clips live in ../shared/data)")
    return CLIP


def test_an_unknown_hardware_decoder_is_refused_by_name():
    with pytest.raises(
        ValueError, match=r"hwaccel\n  Input should be 'cuda' \[type=literal_error, input_value='vulkan'"
    ):
        PreprocessConfig(hwaccel="vulkan")


def test_the_gpu_switch_leaves_the_cpu_config_hash_alone_and_marks_its_own_shards():
    assert PreprocessConfig(hwaccel=None).hash() == PreprocessConfig().hash()
    assert PreprocessConfig(hwaccel="cuda").hash() != PreprocessConfig().hash()


@pytest.mark.skipif(GPU, reason="this machine has an NVIDIA GPU: NVDEC starts")
def test_without_a_gpu_the_switch_fails_naming_the_file_not_the_video():
    clip = _clip()
    with pytest.raises(HWAccelUnavailable, match=rf"{clip.name}: hardware decoding hwaccel='cuda' cannot start") as e:
        read_frames(str(clip), TIMES[:4], hwaccel="cuda")
    assert not isinstance(e.value, VideoError)  # not quarantined as a bad video: the machine is at fault


def test_a_bad_file_is_still_refused_as_a_bad_file_with_the_switch_on(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="junk.mp4: not a readable media file"):
        read_frames(str(junk), [0.0], hwaccel="cuda")


@pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU (NVDEC); untested on hardware so far")
@pytest.mark.parametrize("skip_nonref", [True, False])
def test_gpu_decode_gives_the_cpu_frames_bit_for_bit(skip_nonref):
    clip = _clip()
    rotation = probe(str(clip)).rotation
    cpu, cpu_t = read_frames(str(clip), TIMES, rotation=rotation, skip_nonref=skip_nonref)
    gpu, gpu_t = read_frames(str(clip), TIMES, rotation=rotation, skip_nonref=skip_nonref, hwaccel="cuda")
    np.testing.assert_array_equal(gpu_t, cpu_t)
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
        assert np.array_equal(a, b), f"frame {i} at {cpu_t[i]:.3f}s: {np.mean(a != b):.2%} of values differ"
