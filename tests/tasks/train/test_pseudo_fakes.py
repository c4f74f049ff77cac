import numpy as np
import pytest
import torch

from tasks.train import pseudo_fakes as P
from tasks.train.batch_augment import BatchTransform
from tasks.train.settings import MixAugment


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 4, target=None) -> dict:
    g = _g(1)
    return {
        "video": torch.randn(b, 3, 8, 32, 32, generator=g),  # (B, 3, T, H, W)
        "audio": torch.randn(b, 1, 128, 320, generator=g),  # (B, 1, F, Tm)
        "target": torch.zeros(b) if target is None else torch.tensor(target, dtype=torch.float32),
        "video_id": [f"v{i}" for i in range(b)],
    }


def test_ellipse_mask_is_one_inside_zero_outside_and_soft_between():
    m = P.ellipse_mask(64, 64, (0.5, 0.5), (0.25, 0.25), softness=0.4)
    assert m.shape == (64, 64) and m[32, 32] == 1 and m[0, 0] == 0 and m[32, 2] == 0
    assert ((m > 0) & (m < 1)).any()  # a soft edge, no hard seam


def test_self_blend_differs_from_its_source_only_inside_the_mask():
    b = _batch(3)
    mask = P.face_masks(3, 32, 32, _g())
    out = P.self_blend(b["video"], mask, P.draw_blend_params(3, _g()))
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], b["video"][outside])
    assert (out - b["video"]).abs()[(mask == 1).expand_as(out)].mean() > 0.05


@pytest.mark.parametrize("kind", ["face_resample", "mouth_freeze", "mouth_shuffle"])
def test_face_and_mouth_kinds_change_only_the_masked_region(kind):
    video = _batch(2)["video"]
    mask = P.face_masks(2, 32, 32, _g(), P.MOUTH_CENTRE, P.MOUTH_RADII)
    out = {
        "face_resample": lambda: P.face_resample(video, mask, 0.4),
        "mouth_freeze": lambda: P.mouth_freeze(video, mask, torch.tensor([0, 5])),
        "mouth_shuffle": lambda: P.mouth_shuffle(video, mask, P.shuffled_order(2, 8, _g())),
    }[kind]()
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], video[outside])
    assert not torch.allclose(out, video)


def test_mouth_freeze_holds_one_frame_where_the_mask_is_full():
    video = _batch(2)["video"]
    mask = P.face_masks(2, 32, 32, _g(), P.MOUTH_CENTRE, P.MOUTH_RADII)
    out = P.mouth_freeze(video, mask, torch.tensor([3, 6]))
    full = mask[1, 0, 0] == 1  # (H, W)
    assert torch.equal(out[1][:, :, full], video[1][:, 6:7, full].expand(-1, 8, -1))


def test_shuffled_order_is_a_permutation_never_the_identity():
    order = P.shuffled_order(50, 4, _g())
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(50, 4))
    assert not (order == torch.arange(4)).all(dim=1).any()


def test_shift_audio_moves_by_exactly_the_requested_columns():
    audio = _batch(2)["audio"]
    out = P.shift_audio(audio, torch.tensor([37, -80]))
    assert torch.equal(out[0, ..., 37:], audio[0, ..., :-37])
    assert torch.equal(out[1, ..., :-80], audio[1, ..., 80:])


def test_the_smallest_audio_shift_is_less_in_sync_than_its_real_clip_either_way():
    """audio_shift's 0.1 s minimum is half a frame at 5 fps: the sync branch (a frame paired with the
    sound around its time) must see it, early or late, as less in sync than the REAL clip. Pairing a
    frame with the sound after it made the 0.1 s *earlier* copy the best in sync of the three."""
    from avff_model.signals import frames_of_sound, lagged_correlation

    t, tm, pad = 16, 320, 100  # 16 frames at 5 fps and 320 mel columns of 10 ms: 3.2 s
    kernel = torch.exp(-0.5 * (torch.arange(-15, 16) * 0.01 / 0.04) ** 2)  # Gaussian, sigma 40 ms

    def lag0(shift_columns: int) -> float:
        out = []
        for seed in range(24):  # mouth opening = loudness envelope at each frame's time k / fps
            noise = torch.randn(1, 1, tm + 2 * pad, generator=_g(seed))
            env = torch.nn.functional.conv1d(noise, (kernel / kernel.sum())[None, None], padding=15)[0, 0]
            mouth = env[pad + torch.arange(t) * (tm // t)][None, :, None]  # (1, T, 1)
            audio = env[pad : pad + tm][None, None, None].expand(1, 1, 8, tm)  # (1, 1, F, Tm)
            audio = P.shift_audio(audio, torch.tensor([shift_columns]))
            sound = frames_of_sound(audio, t).mean(-1, keepdim=True)  # (1, T, 1)
            z = [(x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True) for x in (mouth, sound)]
            out.append(float(lagged_correlation(*z, lags=0)[0, 0]))
        return sum(out) / len(out)

    columns = P.PseudoFakes(1.0, generator=_g()).columns[0]  # 0.1 s at 10 ms per column
    real, early, late = lag0(0), lag0(-columns), lag0(columns)
    assert columns == 10 and early < real - 0.1 and late < real - 0.1


def test_derangement_leaves_no_clip_with_its_own_audio():
    for seed in range(20):
        perm = P.derangement(5, _g(seed))
        assert sorted(perm.tolist()) == list(range(5)) and (perm != torch.arange(5)).all()


def test_pitch_shift_moves_a_tone_up_by_the_requested_bins():
    audio = torch.zeros(1, 1, 128, 10)
    audio[..., 40, :] = 1.0
    out = P.pitch_shift(audio, torch.tensor([5.0]))
    assert out[0, 0, :, 0].argmax() == 45


def test_pseudo_fakes_turn_only_real_clips_into_labelled_fakes():
    batch = _batch(8, target=[0, 1, 0, 1, 0, 0, 0, 0])
    out = P.PseudoFakes(1.0, generator=_g())(batch)
    real = batch["target"] == 0
    assert torch.equal(out["target"], torch.ones(8))  # every REAL became FAKE at p = 1
    assert (out["pseudo_kind"][~real] == -1).all() and (out["pseudo_kind"][real] >= 0).all()
    for i in (~real).nonzero().squeeze(1):  # FAKE clips untouched
        assert torch.equal(out["video"][i], batch["video"][i]) and torch.equal(out["audio"][i], batch["audio"][i])
    for i in real.nonzero().squeeze(1):  # each pseudo-fake changed its video or its audio
        changed_v = not torch.equal(out["video"][i], batch["video"][i])
        changed_a = not torch.equal(out["audio"][i], batch["audio"][i])
        kind = P.PseudoFakes(1.0, generator=_g()).kinds[out["pseudo_kind"][i]]
        assert (changed_v, changed_a) == (kind in P.VISUAL_KINDS, kind in P.AUDIO_KINDS)


def test_pseudo_fakes_rate_and_kind_switches():
    out = P.PseudoFakes(0.0, generator=_g())(_batch(8))
    assert torch.equal(out["target"], torch.zeros(8)) and (out["pseudo_kind"] == -1).all()
    n = sum(int(P.PseudoFakes(0.3, generator=_g(s))(_batch(8))["target"].sum()) for s in range(50))
    assert 0.2 < n / 400 < 0.4
    out = P.PseudoFakes(1.0, ("audio_shift",), generator=_g())(_batch(4))
    assert torch.equal(out["video"], _batch(4)["video"]) and (out["pseudo_kind"] == 0).all()
    with pytest.raises(ValueError, match="kinds"):
        P.PseudoFakes(0.5, ("nope",), generator=_g())


def test_pseudo_fakes_are_deterministic_and_ride_in_the_batch_transform():
    a = P.PseudoFakes(0.5, generator=_g(3))(_batch(6))
    b = P.PseudoFakes(0.5, generator=_g(3))(_batch(6))
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    transform = BatchTransform(MixAugment(), generator=_g(), pseudo_fakes=P.PseudoFakes(1.0, generator=_g()))
    assert transform.active and torch.equal(transform(_batch(4))["target"], torch.ones(4))
    assert not BatchTransform(MixAugment(), generator=_g()).active


def test_a_batch_of_one_never_swaps_audio():
    out = P.PseudoFakes(1.0, ("audio_swap",), generator=_g())(_batch(1))
    assert out["target"].item() == 0 and out["pseudo_kind"].item() == -1


def test_the_settings_switch_validates_kinds_and_rate():
    from pydantic import ValidationError

    from tasks.train.settings import PseudoFakeAugment, TrainSettings

    s = TrainSettings(data="d", output_dir="o", pseudo_fakes={"p": 0.5, "kinds": ["audio_shift", "self_blend"]})
    assert s.pseudo_fakes == PseudoFakeAugment(0.5, ("audio_shift", "self_blend")) and s.pseudo_fakes.enabled
    assert not TrainSettings(data="d", output_dir="o").pseudo_fakes.enabled
    assert set(P.KINDS) == set(P.VISUAL_KINDS) | set(P.AUDIO_KINDS) and len(P.KINDS) == 7
    for bad in ({"p": 1.5}, {"p": 0.5, "kinds": ["nope"]}, {"p": 0.5, "kinds": []}):
        with pytest.raises(ValidationError, match="pseudo_fakes"):
            TrainSettings(data="d", output_dir="o", pseudo_fakes=bad)


def test_every_generator_manipulation_has_a_stand_in_entry_of_known_kinds():
    from storage.manipulations import MANIPULATIONS
    from tasks.train.settings import PseudoFakeAugment

    assert set(P.STAND_INS) == set(MANIPULATIONS)  # a new generator type must say which kinds imitate it
    assert all(set(kinds) <= set(P.KINDS) for kinds in P.STAND_INS.values())
    assert P.stand_ins(["lipsync_offset", "face_blend", "not_a_generator_type"]) == {"audio_shift", "self_blend"}
    on = PseudoFakeAugment(p=0.5)
    assert P.kinds_drawn(on) == P.KINDS and P.kinds_drawn(PseudoFakeAugment(p=0.0)) == ()
    assert set(P.kinds_drawn(on, ["mouth_decorrelated"])) == set(P.KINDS) - {"mouth_shuffle", "mouth_freeze"}
    assert P.kinds_drawn(PseudoFakeAugment(p=0.5, kinds=("audio_shift",)), ["lipsync_offset"]) == ()


def test_mouth_masks_follow_each_clips_mouth_box_or_the_template():
    """A batch's "mouth" boxes (fractions) place each clip's mouth ellipse; without them, the template's."""
    h = w = 64
    boxes = torch.tensor([[0.1, 0.3, 0.1, 0.4], [0.6, 0.8, 0.5, 0.9]])  # (B, 4) top, bottom, left, right
    masks = P.face_masks(2, h, w, _g(), *P.mouth_ellipses(boxes))  # (2, 1, 1, H, W)
    for m, (top, bottom, left, right) in zip(masks[:, 0, 0], boxes.tolist()):
        rows, cols = np.nonzero(m.numpy() > 0.5)
        r, c = rows.mean(), cols.mean()
        assert top * h <= r < bottom * h and left * w <= c < right * w, "the mask's centre is inside the clip's box"
    default = P.face_masks(2, h, w, _g(), *P.mouth_ellipses(None))
    assert torch.equal(default, P.face_masks(2, h, w, _g(), P.MOUTH_CENTRE, P.MOUTH_RADII))


def test_the_landmarks_lips_follow_the_mouth_pseudo_fakes_and_stay_with_the_others():
    """A mouth shuffled or frozen in the pixels is shuffled or frozen in the clip's lips too (else the
    lips would still fit the sound and the pseudo-fake would teach nothing to the lip features)."""
    t = 8
    lips = torch.arange(4 * t * 2, dtype=torch.float32).reshape(4, t, 2)  # (B, T, 2) distinct per frame
    for kind in ("mouth_shuffle", "mouth_freeze"):
        out = P.PseudoFakes(1.0, (kind,), generator=_g())({**_batch(4), "lips": lips})
        for b in range(4):
            got = out["lips"][b]
            if kind == "mouth_freeze":
                assert (got == got[:1]).all(), "one frame's lips held for the whole clip"
                assert any(torch.equal(got[0], lips[b, k]) for k in range(t))
            else:
                assert not torch.equal(got, lips[b]) and torch.equal(got[:, 0].sort().values, lips[b, :, 0])
    for kind in ("audio_shift", "audio_swap", "self_blend", "face_resample"):
        out = P.PseudoFakes(1.0, (kind,), generator=_g())({**_batch(4), "lips": lips})
        assert torch.equal(out["lips"], lips), kind
    assert "lips" not in P.PseudoFakes(1.0, ("mouth_shuffle",), generator=_g())(_batch(4))


def test_a_lip_track_moves_with_the_mouth_pseudo_fakes_frames():
    """A 25 fps lip track (K = 5 T steps over the clip's span): a shuffled mouth moves each frame's
    stretch of 5 steps with its frame; a frozen one holds the lips of the frozen frame's time."""
    t, r = 8, 5
    track = torch.arange(4 * t * r * 2, dtype=torch.float32).reshape(4, t * r, 2)  # (B, K, 2) distinct per step
    out = P.PseudoFakes(1.0, ("mouth_shuffle",), generator=_g())({**_batch(4), "lips": track})["lips"]
    for b in range(4):
        blocks = out[b, :, 0].reshape(t, r)  # (T, r): each frame's stretch
        assert not torch.equal(out[b], track[b])
        assert torch.equal(blocks - blocks[:, :1], torch.arange(r, dtype=torch.float32).expand(t, r) * 2)
        assert torch.equal(blocks[:, 0].sort().values, track[b, ::r, 0]), "whole stretches, each once"
    out = P.PseudoFakes(1.0, ("mouth_freeze",), generator=_g())({**_batch(4), "lips": track})["lips"]
    for b in range(4):
        assert (out[b] == out[b, :1]).all()
        step = int(out[b, 0, 0] - track[b, 0, 0]) // 2
        assert step % r == r // 2, "the middle of a frame's stretch"
