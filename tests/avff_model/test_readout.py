"""A fitted read-out (avff_model/readout.py): the model's logit becomes the stated linear join of its parts."""

import pytest
import torch

from avff_model import AVFF, get_config
from avff_model.heads import noisy_or
from avff_model.readout import Readout

CFG = dict(img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)


def _model(**kw) -> AVFF:
    torch.manual_seed(0)
    return AVFF(get_config("tiny", **{**CFG, **kw})).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 4, 32, 32, generator=g), torch.randn(3, 1, 32, 32, generator=g)


@pytest.mark.parametrize("signal_fusion", ["sum", "noisy_or"])
@torch.inference_mode()
def test_the_model_scores_the_readouts_join_of_its_own_logits_and_texture_features(signal_fusion):
    model = _model(signal_fusion=signal_fusion)
    video, audio = _inputs()
    feats = model.forward_features(video, audio, model.inputs)
    branches = model.branch_logits(feats)  # "fusion" and "signals" (sum) | "sync", "texture" (noisy_or)
    texture = model.signals.texture(video)  # (B, 27): the texture branch's features, computed apart
    signals = branches["signals"] if signal_fusion == "sum" else noisy_or(torch.stack([branches["sync"],
                                                                                     branches["texture"]], 1))  # fmt: skip
    probe = tuple(float(0.1 * (i - 13)) for i in range(texture.shape[1]))
    readout = Readout({"fusion": 0.5, "signals": -2.0, "probe": 3.0}, 0.25, probe, -1.5)
    expected = 0.5 * branches["fusion"] - 2.0 * signals + 3.0 * (texture @ torch.tensor(probe) - 1.5) + 0.25
    end_to_end = model(video, audio)
    model.set_readout(readout)
    torch.testing.assert_close(model(video, audio), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model(video, audio), end_to_end)
    model.set_readout(None)  # back to the trained join
    torch.testing.assert_close(model(video, audio), end_to_end)


def test_a_readout_that_does_not_fit_its_model_is_refused():
    width = _model().signals.texture.out_dim  # 27: the grey bank's 24, then 3 colours
    probe = tuple([0.1] * width)
    with pytest.raises(ValueError, match="no signal branches"):
        _model(sync_branch=False, texture_branch=False).set_readout(Readout({"fusion": 1.0, "signals": 1.0}, 0.0))
    with pytest.raises(ValueError, match=f"texture probe has {width - 1} weights; the model: {width}"):
        _model().set_readout(Readout({"fusion": 1.0, "probe": 1.0}, 0.0, probe[:-1]))
    with pytest.raises(ValueError, match="no texture branch"):
        _model(texture_branch=False).set_readout(Readout({"fusion": 1.0, "probe": 1.0}, 0.0, probe))
    _model(texture_branch=False).set_readout(Readout({"fusion": 1.0, "signals": 2.0}, 0.0))  # fits: no probe


def test_a_readout_round_trips_through_json_and_refuses_what_it_cannot_mean():
    readout = Readout({"fusion": 0.5, "signals": 1.5, "probe": -0.5}, 0.1, (1.0, 2.0), 0.3)
    assert Readout.from_json(readout.to_json()) == readout
    with pytest.raises(ValueError, match="got weights for \\['sharpness'\\]"):
        Readout({"sharpness": 1.0}, 0.0)
    with pytest.raises(ValueError, match="exactly when"):
        Readout({"fusion": 1.0, "probe": 1.0}, 0.0)
    with pytest.raises(ValueError, match="exactly when"):
        Readout({"fusion": 1.0}, 0.0, (1.0,))
    with pytest.raises(ValueError, match="finite"):
        Readout({"fusion": float("nan")}, 0.0)


def test_a_readout_joins_in_float32_whatever_the_dtype_autocast_gave_its_parts():
    """Under bf16 autocast the logits and features arrive in bf16; the join (weights fitted in float64, a probe
    bias that may be large) is computed in float32, so it differs from the float32 join by the inputs' rounding
    only."""
    g = torch.Generator().manual_seed(5)
    texture, fusion, signals = torch.randn(8, 27, generator=g), torch.randn(8, generator=g), torch.randn(8, generator=g)
    readout = Readout({"fusion": 0.7, "signals": 1.3, "probe": 0.9}, -0.4, tuple([0.11] * 27), 7.5)
    exact = readout({"fusion": fusion, "signals": signals}, texture)
    half = readout({"fusion": fusion.bfloat16(), "signals": signals.bfloat16()}, texture.bfloat16())
    assert exact.dtype == half.dtype == torch.float32
    torch.testing.assert_close(half, exact, rtol=0, atol=0.1)
