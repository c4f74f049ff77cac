"""IngestSettings describes the preprocessing by PreprocessConfig's own field names and defaults."""

from __future__ import annotations

import dataclasses

from tasks.ingest.preprocess import PreprocessConfig
from tasks.ingest.settings import IngestSettings
from tasks.ingest.video import Limits

# the fields of an ingest run that are no preprocessing: where from and to, splits, shards, execution
NOT_PREPROCESSING = {"data", "out", "identities", "ratios", "folds", "seed", "videos_per_shard", "jpeg_quality",
                     "executor", "ray_address", "num_workers", "retries", "progress"}  # fmt: skip
# the values a test run sets: every one away from its default
NON_DEFAULT = {"face_size": 64, "frames_per_clip": 8, "clip_fps": 12.5, "clip_mode": "native", "max_clips": 5,
               "clip_offset_s": 0.5, "clip_stride_s": 1.0, "face_margin": 1.5, "crop": "landmarks", "lip_track": True,
               "min_face_frac": 0.7, "max_faces": 2, "require_audio": False, "hwaccel": "cuda",
               "max_duration_s": 30.0, "max_bytes": 1000, "max_pixels": 640 * 480, "read_seconds": 9.0}  # fmt: skip


def _defaults(config_class) -> dict:
    return {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}


def test_every_other_field_is_preprocess_configs_by_name_with_its_default():
    pre, limits = _defaults(PreprocessConfig), _defaults(Limits)
    preprocessing = set(IngestSettings.model_fields) - NOT_PREPROCESSING
    assert preprocessing == set(NON_DEFAULT)  # a new field: preprocessing (named as there) or listed above
    for name in preprocessing:
        assert name in pre or name in limits, f"{name} is neither a PreprocessConfig nor a Limits field"
        assert IngestSettings.model_fields[name].default == {**pre, **limits}[name], name


def test_every_preprocessing_value_reaches_the_preprocess_config(tmp_path):
    cfg = IngestSettings(data=str(tmp_path / "in"), out=str(tmp_path / "out"), **NON_DEFAULT).preprocess()
    got = {**dataclasses.asdict(cfg), **dataclasses.asdict(cfg.limits)}
    assert {k: got[k] for k in NON_DEFAULT} == NON_DEFAULT
    default = IngestSettings(data=str(tmp_path / "in"), out=str(tmp_path / "out")).preprocess()
    assert default == PreprocessConfig() and default.hash() == PreprocessConfig().hash()
