"""predict's model inputs: every clip's mouth box and lip shape come from the sample the model's input
contract built (avff_model.inputs.clip_to_tensors), once, and the scores are those of the per-clip reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avff_model import AVFF, get_config
from avff_model.crop_geometry import mouth_fractions
from avff_model.inputs import clip_lips, clip_to_tensors
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.serve.predict import decoded_clips, model_inputs, score_video
from tasks.serve.scorer import Scorer

DFDC = Path(__file__).resolve().parents[4] / "shared" / "data" / "dfdc_sample"
# 4 frames at 12.5 fps: 0.32 s clips whose mel is 32 frames, the tiny model's input; landmark crops: a mouth box and
# lip shapes of their own
PRE = PreprocessConfig(face_size=32, frames_per_clip=4, clip_fps=12.5, n_mels=32, max_clips=3, crop="landmarks")
CFG = dict(img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)


@pytest.fixture(scope="module")
def real_clip():
    videos = sorted(DFDC.glob("*.mp4"))
    if not videos:
        pytest.skip(f"no real DFDC sample clips under {DFDC}")
    return str(videos[0])


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    return Scorer(AVFF(get_config("tiny", **CFG)).eval(), preprocess=PRE.to_dict())


def test_model_inputs_stack_the_samples_mouth_boxes_and_lip_shapes(real_clip, scorer):
    with face_detector(PRE) as det:
        clips, _ = decoded_clips(real_clip, PRE, det)
        s = score_video(real_clip, scorer, PRE, det)
    x = model_inputs(clips, scorer.config.img_size)
    n, t = len(clips), PRE.frames_per_clip
    assert {k: tuple(v.shape) for k, v in x.items()} == {
        "video": (n, 3, t, 32, 32), "audio": (n, 1, 32, 32), "mouth": (n, 4), "lips": (n, t, 2)}  # fmt: skip
    # the reference, clip by clip: the mouth box and lip shape read from each clip's metadata
    mouth = torch.tensor([mouth_fractions(c.meta.mouth_box, c.frames.shape[1]) for c in clips], dtype=torch.float32)
    lips = torch.stack([clip_lips(c) for c in clips])
    assert torch.equal(x["mouth"], mouth) and torch.equal(x["lips"], lips)
    assert lips.abs().sum() > 0  # the real face's landmarks reached the clips
    ref = [
        scorer.predict_proba(t["video"][None], t["audio"][None], mouth=t["mouth"][None], lips=t["lips"][None])[0]
        for t in (clip_to_tensors(c, img_size=scorer.config.img_size) for c in clips)
    ]
    np.testing.assert_allclose(s.clip_p_fake, ref, rtol=1e-5, atol=1e-6)
    # the lips matter to this model: scoring without them gives other numbers
    assert not np.allclose(scorer.predict_proba(x["video"], x["audio"], mouth=x["mouth"]), ref, atol=1e-4)


def test_a_model_of_lip_track_shards_scores_a_real_video_with_its_lip_tracks(real_clip, scorer):
    """Shards ingested with ``lip_track``: predict makes each clip's 25 fps lip track (0.32 s: 8 steps, not
    the 4 frames), the scorer takes it as the clips' lips, and it changes the scores."""
    pre = PreprocessConfig(**{**PRE.to_dict(), "limits": PRE.limits, "lip_track": True})
    with face_detector(pre) as det:
        clips, _ = decoded_clips(real_clip, pre, det)
        s = score_video(real_clip, scorer, pre, det)
    assert s.reason is None and len(s.clip_p_fake) == len(clips)
    x = model_inputs(clips, scorer.config.img_size)
    assert tuple(x["lips"].shape) == (len(clips), 8, 2) and x["lips"].abs().sum() > 0
    np.testing.assert_allclose(s.clip_p_fake, scorer.predict_proba(**x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected lips"):
        scorer.predict_proba(x["video"], x["audio"], lips=x["lips"][..., :1])
