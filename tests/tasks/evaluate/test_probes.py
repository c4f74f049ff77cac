"""Shortcut probes on a real encoded clip: the edits do what they say, and a model that keys on
leading silence or on the encoder is caught while a model that ignores both is not."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tasks.evaluate.probes import PROBE_RATE, Edit, default_edits, leading_silence_s, shortcut_probes, write_edit
from tasks.ingest.audio import decode_audio
from tasks.synthetic.dfdc_sample import ShortcutControls, make_single_folder_sample

LEAD = 0.3


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory) -> Path:
    out = make_single_folder_sample(tmp_path_factory.mktemp("probe"), n_real=1, duration_s=3.0, size=(96, 96),
                                    manipulations=(), controls=ShortcutControls(lead_silence_s=(LEAD, LEAD)))  # fmt: skip
    return next(out.glob("*.mp4"))


def _lead(path) -> float:
    return leading_silence_s(decode_audio(str(path), PROBE_RATE), PROBE_RATE)


def _frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_edits_shift_silence_and_cut_as_named(real_clip, tmp_path):
    assert _lead(real_clip) == pytest.approx(LEAD, abs=0.05)
    cases = {Edit("s", shift_s=0.5): LEAD + 0.5, Edit("a", shift_s=-0.2): LEAD - 0.2, Edit("z", zero_s=1.0): 1.0,
             Edit("c"): LEAD}  # fmt: skip
    for edit, lead in cases.items():
        assert _lead(write_edit(real_clip, tmp_path / f"{edit.name}.mp4", edit)) == pytest.approx(lead, abs=0.06), edit
    cut = write_edit(real_clip, tmp_path / "cut.mp4", Edit("cut", cut_s=-1.0))
    assert _lead(cut) < 0.05
    assert _frames(real_clip) - _frames(cut) == pytest.approx(LEAD * 25, abs=2)  # the video lost the same seconds


def test_probes_catch_a_silence_model_and_an_encoder_model_but_not_a_blind_one(real_clip, tmp_path):
    models = {
        "silence": lambda p: min(1.0, _lead(p)),  # "fake" = long leading silence
        "encoder": lambda p: min(1.0, Path(p).stat().st_size / 200_000),  # "fake" = many bytes
        "blind": lambda p: 0.7,
    }
    out = {m: {r.probe: r for r in shortcut_probes(real_clip, f, tmp_path / m)} for m, f in models.items()}
    assert [r for r in out["blind"]] == [e.name for e in default_edits()]
    assert all(r.delta == 0.0 for r in out["blind"].values())
    silence = out["silence"]
    assert silence["audio_shift_+1s"].delta == pytest.approx(1.0 - LEAD, abs=0.07)
    assert silence["silence_added_0.5s"].delta == pytest.approx(0.5 - LEAD, abs=0.07)
    assert silence["leading_silence_cut"].delta == pytest.approx(-LEAD, abs=0.07)
    assert abs(silence["reencoded_crf35"].delta) < 0.03
    assert out["encoder"]["reencoded_crf35"].delta < -0.01  # a smaller file at a lower quality
