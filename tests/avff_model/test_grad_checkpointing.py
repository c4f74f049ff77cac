"""Activation checkpointing is a cheaper-memory path: it must give the reference gradients."""

from __future__ import annotations

import torch

from avff_model import AVFF, get_config


def _grads(checkpointed: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = get_config("tiny", img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)
    model = AVFF(cfg).train()
    model.set_grad_checkpointing(checkpointed)
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, 4, 32, 32, generator=g)  # (B, 3, T, H, W)
    audio = torch.randn(2, 1, 32, 32, generator=g)  # (B, 1, F, Tm)
    losses = model.pretrain_losses(video, audio, generator=torch.Generator().manual_seed(2))
    (losses["loss"] + losses["disc_loss"]).backward()
    return {k: v.detach() for k, v in losses.items()}, {
        n: p.grad for n, p in model.named_parameters() if p.grad is not None
    }


def test_checkpointed_blocks_give_the_same_losses_and_gradients():
    ref_losses, ref = _grads(False)
    losses, got = _grads(True)
    assert all(torch.equal(ref_losses[k], losses[k]) for k in ref_losses)
    assert ref.keys() == got.keys() and len(ref) > 10
    assert all(torch.allclose(ref[k], got[k], rtol=1e-5, atol=1e-7) for k in ref)
