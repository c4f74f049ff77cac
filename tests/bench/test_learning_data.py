"""bench/learning_data.py: the in-memory lip-sync clips bench/learning.py trains on."""

from __future__ import annotations

import torch

from bench.learning_data import KINDS, T, TM, make_clips, to_model


def test_each_identity_gives_a_real_and_one_fake_per_lipsync_type_changed_where_it_should_be():
    d = make_clips("external", 2, img=32, render_size=128)
    assert d["video"].shape == (8, 3, T, 32, 32) and d["video"].dtype == torch.uint8
    assert d["mel"].shape == (8, 128, TM) and d["mouth"].shape == (8, T)
    assert d["kind"].tolist() == [0, 1, 2, 3] * 2 and d["label"].tolist() == [0, 1, 1, 1] * 2
    assert d["ident"].tolist() == [0] * 4 + [1] * 4
    real, offset, swap, mouth = (KINDS.index(k) for k in KINDS)
    # audio fakes keep the REAL frames and change the sound; mouth_decorrelated changes the frames
    assert torch.equal(d["video"][offset], d["video"][real]) and torch.equal(d["video"][swap], d["video"][real])
    assert not torch.equal(d["mel"][offset], d["mel"][real]) and not torch.equal(d["mel"][swap], d["mel"][real])
    assert not torch.equal(d["video"][mouth], d["video"][real])
    v, a = to_model(d["video"][:2], d["mel"][:2])
    assert v.shape == (2, 3, T, 32, 32) and a.shape == (2, 1, 128, TM) and torch.isfinite(a).all()
