"""IngestSettings embeds the preprocessing config: each preprocessing field is declared once, in PreprocessConfig."""

from __future__ import annotations

import dataclasses
import sys

import pytest
from pydantic import ValidationError

from tasks.ingest.config import Limits, PreprocessConfig
from tasks.ingest.settings import IngestSettings, preprocessing_places

# the values a test run sets: every one away from its default
NON_DEFAULT = {"face_size": 64, "frames_per_clip": 8, "clip_fps": 12.5, "clip_mode": "native", "max_clips": 5,
               "clip_offset_s": 0.5, "clip_stride_s": 1.0, "face_margin": 1.5, "crop": "landmarks", "lip_track": True,
               "min_face_frac": 0.7, "max_faces": 2, "require_audio": False, "hwaccel": "cuda",
               "limits": {"max_duration_s": 30.0, "max_bytes": 1000, "max_pixels": 640 * 480, "read_seconds": 9.0}}  # fmt: skip


def test_no_preprocessing_field_is_declared_a_second_time():
    """A field named like one of PreprocessConfig's (or Limits') anywhere but the nested ``preprocess`` would be a
    second declaration of it, with a default and bounds of its own to drift."""
    preprocessing = {f.name for f in dataclasses.fields(PreprocessConfig)} | {
        f.name for f in dataclasses.fields(Limits)
    }
    assert not preprocessing & set(IngestSettings.model_fields)
    assert IngestSettings.model_fields["preprocess"].annotation is PreprocessConfig
    assert set(preprocessing_places()) == preprocessing - {"limits"}


def test_every_preprocessing_value_reaches_the_preprocess_config(tmp_path):
    cfg = IngestSettings(data=str(tmp_path / "in"), out=str(tmp_path / "out"), preprocess=NON_DEFAULT).preprocess
    got = dataclasses.asdict(cfg)
    assert {k: got[k] for k in NON_DEFAULT} == NON_DEFAULT
    default = IngestSettings(data=str(tmp_path / "in"), out=str(tmp_path / "out")).preprocess
    assert default == PreprocessConfig() and default.hash() == PreprocessConfig().hash()


def test_a_flat_preprocessing_key_is_refused_naming_its_place(tmp_path):
    """The one refusal of a flat key: the CLI's file, the flow's parameter and the Prefect form all come here."""
    base = dict(data=str(tmp_path / "in"), out=str(tmp_path / "out"))
    with pytest.raises(ValidationError) as e:
        IngestSettings(**base, face_size=64)
    assert [err["msg"] for err in e.value.errors()] == [
        "Value error, face_size is a preprocessing setting: give it as preprocess.face_size (YAML: under preprocess:)"
    ]
    with pytest.raises(
        ValidationError, match=r"max_bytes is a preprocessing setting: give it as preprocess\.limits\.max_bytes"
    ):
        IngestSettings.model_validate({**base, "max_bytes": 1000})


def test_bounds_and_cross_field_checks_apply_inside_the_group(tmp_path):
    base = dict(data=str(tmp_path / "in"), out=str(tmp_path / "out"))
    with pytest.raises(ValidationError) as e:
        IngestSettings(**base, preprocess={"face_size": 8, "limits": {"max_bytes": 0}})
    assert {err["loc"] for err in e.value.errors()} == {
        ("preprocess", "face_size"),
        ("preprocess", "limits", "max_bytes"),
    }
    with pytest.raises(ValidationError, match="lip_track needs crop=landmarks"):
        IngestSettings(**base, preprocess={"lip_track": True})


def test_the_settings_import_no_decoder_detector_or_torch():
    """The CLI builds its flags from IngestSettings: importing it must stay light."""
    import subprocess

    code = "import sys, tasks.ingest.settings; print(sorted({'av', 'cv2', 'mediapipe', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
