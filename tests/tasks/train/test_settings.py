"""TrainSettings refuses what cannot work at construction, and agrees with the registries it names."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest
from pydantic import ValidationError

from tasks.train.settings import AUGMENT_PRESETS, STAGES, TrainSettings, VideoAugment

BASE = {"data": "d", "output_dir": "o"}


def _error(**kw) -> str:
    with pytest.raises(ValidationError) as e:
        TrainSettings(**{**BASE, **kw})
    (only,) = e.value.errors()
    return f"{'.'.join(map(str, only['loc']))}: {only['msg']}"


def test_a_misspelled_monitor_is_refused_at_construction_in_one_line():
    text = _error(monitor="val_video_auroc")
    assert text.startswith("monitor: Value error, unknown monitor 'val_video_auroc'; known: val_loss, val_video_auc")
    assert "\n" not in text
    assert "unknown monitor 'best_val_video_auc'" in _error(monitor="best_val_video_auc")  # a key, but no val metric


@pytest.mark.parametrize(("field", "value", "message"), [
    ("model_config", "huge", "unknown model preset 'huge'; known: laptop, paper, tiny"),
    ("fusion", "concat", "unknown fusion 'concat'"),
    ("video_augment", "heavy", "unknown video augment preset 'heavy'; known: none, light, strong"),
    ("video_augment", {"hue": 0.9}, "hue must be in [0, 0.5] turns"),
    ("mix", {"prob": 2.0}, "prob and switch_p are probabilities"),
    ("loss", "hinge", "Input should be 'bce' or 'focal'"),
    ("batch_size", 0, "greater than or equal to 1"),
    ("curriculum_start", 0.0, "greater than 0"),
    ("nonsense", 1, "Extra inputs are not permitted"),
])  # fmt: skip
def test_bad_values_are_refused_naming_the_field(field, value, message):
    text = _error(**{field: value})
    assert text.startswith(f"{field}: ") and message in text, text


def test_a_switch_contradicting_the_overrides_is_refused_before_any_run():
    assert "fusion='late' contradicts overrides['fusion']='attention'" in _error(
        fusion="late", overrides={"fusion": "attention"}
    )
    s = TrainSettings(**BASE, fusion="late", aux_weight=0.5, overrides={"num_slices": 2})
    assert s.model_overrides() == {"num_slices": 2, "fusion": "late", "aux_heads": True}


def test_literal_choices_match_the_registries_they_name():
    from tasks.evaluate.metrics import CRITERIA
    from tasks.evaluate.registry import REGISTER_IF
    from tasks.train.objective import list_losses

    fields = TrainSettings.model_fields
    assert set(get_args(fields["loss"].annotation)) == set(list_losses())
    assert get_args(fields["threshold_criterion"].annotation) == CRITERIA
    assert get_args(fields["register_if"].annotation) == REGISTER_IF
    assert STAGES == ("both", "pretrain", "classify")


def test_presets_json_and_dataclasses_are_one_value():
    light = TrainSettings(**BASE, video_augment="light").video_augment
    assert light == AUGMENT_PRESETS["video_augment"]["light"]
    from_json = TrainSettings.model_validate_json('{"data": "d", "output_dir": "o", "video_augment": {"hflip": 0.5}}')
    assert from_json.video_augment == VideoAugment(hflip=0.5)


def test_replace_validates_and_the_dump_round_trips():
    s = TrainSettings(**BASE, model_config="laptop", mix={"mixup_alpha": 0.2}, audio_augment="sync_safe")
    assert TrainSettings.model_validate(s.model_dump(by_alias=True)) == s
    assert TrainSettings.model_validate_json(s.model_dump_json()) == s
    assert s.replace(fold=2).fold == 2 and s.replace(fold=2).model_preset == "laptop"
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        s.replace(fold=-1)
    assert s.config_hash() == s.replace().config_hash() != s.replace(seed=1).config_hash()


def test_the_settings_module_imports_no_torch():
    """The CLI builds its flags from this module: it must stay cheap to import."""
    code = "import sys, tasks.train.settings; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
