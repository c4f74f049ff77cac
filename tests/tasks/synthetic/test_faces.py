"""Face rendering: shapes, a mouth whose darkness follows the opening, and manipulations
that stay inside the face."""

from __future__ import annotations

import numpy as np

from tasks.synthetic.faces import blend_face, degrade_face, draw_look, draw_scene, face_sources, face_sprite, render

N, SIZE = 12, (128, 160)


def _scene(seed: int = 0, source: int = 1):
    rng = np.random.default_rng(seed)
    look = draw_look(rng, source)
    return look, draw_scene(rng, look, SIZE, N, 25)


def test_sources_are_the_astronaut_and_many_lfw_faces():
    sources = face_sources()
    assert sources[0][0].shape == (512, 512, 3) and len(sources) > 60
    assert all(img.shape == (25, 25, 1) for img, _ in sources[1:])


def test_render_shapes_and_face_inside_the_frame():
    _, scene = _scene()
    frames = render(scene, np.zeros(N))
    assert frames.shape == (N, *SIZE, 3) and frames.dtype == np.uint8
    bg = np.round(scene.background * 255).astype(np.uint8)
    changed = np.any(frames[0] != bg, -1)
    ys, xs = np.nonzero(changed)
    assert 0 < ys.min() and ys.max() < SIZE[0] - 1 and 0 < xs.min() and xs.max() < SIZE[1] - 1
    assert abs(xs.mean() - scene.cx[0]) < 0.1 * scene.face_px and abs(ys.mean() - scene.cy[0]) < 0.15 * scene.face_px


def test_mouth_darkens_with_the_opening():
    _, scene = _scene(2)
    opening = np.r_[0.0, np.linspace(0.2, 1.0, N - 1)]
    frames = render(scene, opening).astype(float)
    closed = render(scene, np.zeros(N)).astype(float)
    darkening = (closed - frames).sum(axis=(1, 2, 3))  # (N,)
    assert darkening[0] == 0 and np.all(np.diff(darkening) > 0)


def test_blend_changes_only_the_face_and_degrade_only_the_face_box():
    look, scene = _scene(3)
    donor = face_sprite(draw_look(np.random.default_rng(9), 2), scene.face_px)
    blended = blend_face(scene.sprite, donor, scene.face_px, np.array([1.1, 1.0, 0.9], np.float32))
    assert np.array_equal(blended[..., 3], scene.sprite[..., 3])
    assert np.array_equal(blended[scene.sprite[..., 3] == 0], scene.sprite[scene.sprite[..., 3] == 0])
    assert np.abs(blended - scene.sprite).max() > 0.1
    frames = render(scene, np.zeros(N))
    damaged = degrade_face(frames, scene, np.random.default_rng(0))
    diff = np.any(damaged != frames, -1)  # (N, H, W)
    for i in range(N):
        ys, xs = np.nonzero(diff[i])
        reach = 0.55 * scene.face_px * scene.scale[i] + 9  # the box, rounded out to 8x8 blocks
        assert len(ys) > 0 and np.abs(ys - scene.cy[i]).max() <= reach and np.abs(xs - scene.cx[i]).max() <= reach
