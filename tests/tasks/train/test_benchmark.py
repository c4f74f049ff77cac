"""tasks/train/benchmark.py: the generator benchmark's split sizes and seed, and its variants built as ``avff ablate`` builds them."""

from __future__ import annotations

import pytest

from storage.manipulations import MANIPULATIONS
from tasks.synthetic.dfdc_sample import make_dfdc_sample
from tasks.ingest.splits import assign_splits
from tasks.ingest.scan import scan_dfdc
from tasks.train import benchmark as B
from tasks.train.experiment_settings import AblationConfig
from tasks.train.settings import PSEUDO_FAKE_KINDS, TrainSettings


def _base(**kw) -> TrainSettings:
    return TrainSettings(data="shards", output_dir="root", seed=3, **{"pseudo_fakes": {"p": 0.5}, **kw})


def test_the_split_puts_at_least_the_asked_identities_in_val():
    train, val, test = B.split_ratios(32, 10)
    assert val * 32 >= 10 and train + val + test == pytest.approx(1.0) and train * 32 >= 15
    with pytest.raises(ValueError, match="--n-real"):
        B.split_ratios(16, 10)


def test_the_split_seed_gives_every_split_both_labels_and_val_its_identities(tmp_path):
    data = make_dfdc_sample(tmp_path / "data", n_real=10, parts=2, duration_s=3.5, size=(64, 64), seed=0,
                            manipulations=MANIPULATIONS[:1])  # fmt: skip
    entries = scan_dfdc(str(data)).entries
    ratios = B.split_ratios(10, 2)
    seed = B.split_seed(data, ratios, min_val_groups=2)
    a = assign_splits(entries, ratios, seed=seed)
    assert {(a[e.video_id].split, e.label) for e in entries} == {(s, lab) for s in ("train", "val", "test")
                                                                 for lab in ("REAL", "FAKE")}  # fmt: skip
    assert len({x.group for x in a.values() if x.split == "val"}) >= 2
    with pytest.raises(ValueError, match="generate more identities"):
        B.split_seed(data, ratios, min_val_groups=11)  # more than there are


def test_a_variant_is_built_as_avff_ablate_builds_it():
    base = _base(overrides={"sync_branch": False}, lr=1e-3)
    own = {"fusion": "avff_concat", "overrides": {"texture_branch": False}, "pseudo_fakes": {"p": 0.0}}
    s = B.variant_settings(base, "avff_plain", own, "root/avff_plain")
    assert s.fusion == "avff_concat" and s.output_dir == "root/avff_plain" and s.seed == 3 and s.lr == 1e-3
    assert s.overrides == {"sync_branch": False, "texture_branch": False}  # nested fields merge key by key
    assert s.pseudo_fakes.p == 0.0
    ablate = AblationConfig(base=base, variants={"avff_plain": own}, seeds=[3],
                            log_checkpoints=base.log_checkpoints)  # fmt: skip
    assert s == ablate.variant_config("avff_plain", 3).replace(output_dir="root/avff_plain")
    assert B.variant_settings(base, "video_only", {}, "x").fusion == "video_only"  # no fusion given: the name
    with pytest.raises(ValueError, match="may not override"):
        B.variant_settings(base, "v", {"seed": 4}, "x")  # the benchmark's, not the variant's


def test_the_drawn_kinds_follow_the_settings_and_a_held_out_type_drops_its_stand_in():
    def drawn(name, own=None, held_out=()):
        return B.drawn_kinds(B.variant_settings(_base(), name, own or {}, "x"), held_out)

    assert drawn("avff_concat") == PSEUDO_FAKE_KINDS
    assert drawn("avff_concat", {"pseudo_fakes": {"p": 0.0}}) == ()
    assert drawn("avff_concat", {"pseudo_fakes": {"p": 0.5, "kinds": ["audio_shift"]}}) == ("audio_shift",)
    assert "audio_shift" not in drawn("avff_concat", held_out=("lipsync_offset",))
    assert "lipsync_offset" not in B.stood_in(drawn("avff_concat", held_out=("lipsync_offset",)))
    assert "audio_shift" not in drawn("avff_concat", {"exclude_manipulations": ["lipsync_offset"]})
    # a uni-modal head cannot see a pseudo-fake of the other modality: no stand-in for it
    assert not {"audio_shift", "audio_swap", "audio_pitch"} & set(drawn("video_only"))
    assert set(drawn("audio_only")) == {"audio_shift", "audio_swap", "audio_pitch"}
    assert B.stood_in(("audio_shift",)) == {"lipsync_offset"}
    assert B.stood_in(("mouth_freeze", "face_resample")) == {"mouth_decorrelated", "visual_artifact"}
    assert B.stood_in(drawn("avff_concat")) == set(MANIPULATIONS)  # every type has a stand-in among the kinds


def test_stage_one_trains_the_encoders_alone_with_the_sync_weight_asked_for(tmp_path):
    s = B.pretrain_settings(tmp_path / "shards", tmp_path / "pre", epochs=2, seed=1, w_sync=1.0)
    assert (s.stages, s.pretrain_epochs, s.seed, s.overrides) == ("pretrain", 2, 1, {"w_sync": 1.0})
    assert B.pretrain_settings(tmp_path, tmp_path, epochs=1, seed=0, w_sync=0.0).overrides == {}


def test_stage_one_has_the_shape_every_variant_shares(tmp_path):
    """``--set 'overrides={"tubelet": 1}'`` reaches stage 1 too: its encoders load into each variant's model
    (a tubelet-2 stage 1 would not: its patch embedding has the other shape)."""
    from avff_model.config import get_config
    from avff_model.model import AVFF
    from tasks.train.run import load_encoders, save_encoders

    s = B.pretrain_settings(tmp_path, tmp_path, epochs=1, seed=0, w_sync=1.0, overrides={"tubelet": 1})
    assert s.overrides == {"tubelet": 1, "w_sync": 1.0}
    save_encoders(AVFF(get_config("tiny", **s.overrides)), str(tmp_path / "encoders.safetensors"))
    variant = AVFF(get_config("tiny", tubelet=1, sync_branch=False, texture_branch=False))
    loaded, missing = load_encoders(variant, str(tmp_path / "encoders.safetensors"))
    assert loaded > 0 and missing == 0
    with pytest.raises(ValueError, match="shape mismatch"):
        load_encoders(AVFF(get_config("tiny")), str(tmp_path / "encoders.safetensors"))
