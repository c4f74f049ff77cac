"""`avff predict` / evaluate on a two-person video: one score per face, the video's is the max."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avff_model import AVFF, get_config
from storage.shard_schema import FAKE, REAL
from tasks.ingest.preprocess import PreprocessConfig, face_detector
from tasks.serve.predict import score_video, video_p_fake
from tasks.serve.scorer import Scorer
from tasks.synthetic.two_faces import two_face_pair

# 4 frames at 12.5 fps: 0.32 s clips whose mel is 32 frames, the tiny model's input
PRE = PreprocessConfig(face_size=32, frames_per_clip=4, clip_fps=12.5, n_mels=32, max_clips=3)
CFG = dict(img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)


@pytest.fixture(scope="module")
def two_person(tmp_path_factory):
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    root = tmp_path_factory.mktemp("score_two")
    src = make_dfdc_sample(root / "src", n_real=2, parts=0, duration_s=1.6, size=(160, 160), seed=0,
                           manipulations=("face_blend",))  # fmt: skip
    meta = json.loads((src / "metadata.json").read_text())
    fake = next(k for k, v in meta.items() if v["label"] == FAKE)
    other = next(k for k, v in meta.items() if v["label"] == REAL and k != meta[fake]["original"])
    two, _ = two_face_pair(src / fake, src / meta[fake]["original"], src / other, root / "two", height=320, seconds=1.6)
    return two, src / other


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    return Scorer(AVFF(get_config("tiny", **CFG)).eval(), preprocess=PRE.to_dict())


def test_a_two_person_video_scores_each_face_and_takes_the_max(two_person, scorer):
    two, single = two_person
    with face_detector(PRE) as det:
        s = score_video(str(two), scorer, PRE, det)
        one = score_video(str(single), scorer, PRE, det)
    assert s.reason is None and len(s.face_p_fake) == 2 and sorted(set(s.clip_face)) == [0, 1]
    p, faces = np.array(s.clip_p_fake), np.array(s.clip_face)
    assert s.face_p_fake == pytest.approx([p[faces == 0].mean(), p[faces == 1].mean()])
    assert s.p_fake == pytest.approx(max(s.face_p_fake))
    assert s.face_p_fake[0] != pytest.approx(s.face_p_fake[1])  # the two faces' crops were scored, not one twice
    # a one-face video: the mean over its clips, as before faces
    assert one.face_p_fake == pytest.approx([one.p_fake]) and one.p_fake == pytest.approx(np.mean(one.clip_p_fake))


def test_video_p_fake_is_the_max_of_the_face_means():
    p_video, per_face = video_p_fake(np.array([0.2, 0.4, 0.9, 0.7]), np.array([0, 0, 1, 1]))
    assert per_face == pytest.approx([0.3, 0.8]) and p_video == pytest.approx(0.8)
