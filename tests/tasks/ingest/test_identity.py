"""identities=auto: dlib face embeddings clustered into identities that keep a person in one split."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tasks.ingest.identity import (
    SAME_PERSON,
    cluster_faces,
    embed_video,
    embed_videos,
    face_identities,
    frame_times,
    roots,
)
from tasks.ingest.scan import VideoEntry, scan_dfdc
from tasks.ingest.settings import IngestSettings
from tasks.ingest.splits import IDENTITY_PREFIX, assign_splits, identity_groups

REALAV = Path(__file__).resolve().parents[4] / "shared" / "data" / "realav"


def _entry(vid: str, label: str = "REAL", original: str | None = None) -> VideoEntry:
    return VideoEntry(vid, "p", f"{vid}.mp4", label, original, 1)


# ------------------------------------------------------------------ pure parts


def test_clusters_join_near_embeddings_only_and_are_named_by_their_smallest_video():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=128), rng.normal(size=128)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)  # ~1.4 apart
    near = a + 0.1 * SAME_PERSON * rng.normal(size=128) / np.sqrt(128)  # ~0.04 from a
    emb = {"zz": a, "aa": near, "mm": b}
    assert cluster_faces(emb) == {"aa": "face-aa", "zz": "face-aa", "mm": "face-mm"}
    assert cluster_faces(dict(reversed(list(emb.items())))) == cluster_faces(emb)  # input order is irrelevant
    assert len(set(cluster_faces(emb, threshold=10.0).values())) == 1  # a loose threshold merges all
    assert cluster_faces({"x": a}) == {"x": "face-x"} and cluster_faces({}) == {}
    with pytest.raises(ValueError, match="finite"):
        cluster_faces({"x": a, "y": np.full(128, np.nan)})


def test_only_reals_and_orphan_fakes_are_embedded():
    entries = [_entry("r"), _entry("f", "FAKE", "r"), _entry("orphan", "FAKE", "gone"), _entry("synthetic", "FAKE")]
    assert [e.video_id for e in roots(entries)] == ["r", "orphan", "synthetic"]


def test_frame_times_stay_inside_the_read_window():
    assert frame_times(10.0, 5, 60.0) == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert max(frame_times(600.0, 4, 60.0)) < 60.0


def test_identities_setting_is_a_mode_or_a_map(tmp_path):
    base = {"data": str(tmp_path / "d"), "out": str(tmp_path / "o")}
    auto = IngestSettings(**base, identities="auto")
    assert auto.face_identities and auto.identity_map is None and auto.identities == "auto"
    original = IngestSettings(**base, identities="original")
    assert not original.face_identities and original.identity_map is None
    assert IngestSettings(**base).identity_map is None and not IngestSettings(**base).face_identities
    mapped = IngestSettings(**base, identities="ids.csv")
    assert mapped.identity_map == str(Path.cwd() / "ids.csv") and not mapped.face_identities


# ------------------------------------------------------------------ real embedder on generated videos (runs in CI)


def _face_canvas(face: np.ndarray, size: int, scale: float, shift: tuple[int, int], background: int) -> np.ndarray:
    """(h, w, 3) uint8 face photo -> (size, size, 3) frame: the face scaled, shifted, on a flat background."""
    side = int(size * 0.6 * scale)
    im = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    frame = np.full((size, size, 3), background, np.uint8)
    y, x = (size - side) // 2 + shift[0], (size - side) // 2 + shift[1]
    frame[y : y + side, x : x + side] = im
    return frame


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for rgb in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        c.mux(s.encode())


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    """A DFDC-format folder: the astronaut in two REAL videos (other size, place, background, drift),
    a fake of the first, and another person (an LFW face) in a third REAL video."""
    from skimage import data

    from tasks.synthetic.faces import _photos

    root = tmp_path_factory.mktemp("faces")
    astronaut = cv2.resize(data.astronaut()[20:260, 130:370], (240, 240))  # the face, square
    lfw = _photos()[1][0]  # (25, 25, 1) grey, an LFW face the sample generator also animates
    other = np.repeat(np.clip(lfw * (255.0 if lfw.max() <= 1 else 1.0), 0, 255).astype(np.uint8), 3, axis=-1)
    shots = {
        "astro_a": [_face_canvas(astronaut, 256, 1.0, (0, 2 * i), 40) for i in range(12)],
        "astro_b": [_face_canvas(astronaut, 256, 1.15, (-10, -15 + i), 190) for i in range(12)],
        "astro_fake": [_face_canvas(astronaut, 256, 1.0, (0, 2 * i), 60) for i in range(12)],  # not a byte copy
        "lfw": [_face_canvas(other, 256, 1.0, (i, 0), 40) for i in range(12)],
    }
    for name, frames in shots.items():
        _write_video(root / f"{name}.mp4", frames)
    meta = {"astro_a.mp4": {"label": "REAL"}, "astro_b.mp4": {"label": "REAL"}, "lfw.mp4": {"label": "REAL"},
            "astro_fake.mp4": {"label": "FAKE", "original": "astro_a.mp4"}}  # fmt: skip
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def test_one_face_in_two_videos_becomes_one_identity_and_one_split(two_faces):
    result = scan_dfdc(str(two_faces))
    identities, embedded = face_identities(str(two_faces), result.entries)
    assert sorted(identities) == ["astro_a", "astro_b", "lfw"]  # the fake follows its original instead
    assert identities["astro_a"] == identities["astro_b"] == "face-astro_a"
    assert identities["lfw"] == "face-lfw"
    assert embedded.no_face == [] and embedded.failed == {}
    d = {k: float(np.linalg.norm(embedded.embeddings[k] - embedded.embeddings["astro_a"])) for k in ("astro_b", "lfw")}
    assert d["astro_b"] < SAME_PERSON < d["lfw"], d

    before = identity_groups(result.entries).groups  # original links only: the astronaut in two groups
    assert before["astro_a"] != before["astro_b"]
    grouping = identity_groups(result.entries, identities)
    assert (
        grouping.groups["astro_a"]
        == grouping.groups["astro_b"]
        == grouping.groups["astro_fake"]
        == IDENTITY_PREFIX + "face-astro_a"
    )
    assert grouping.groups["lfw"] == IDENTITY_PREFIX + "face-lfw"
    for seed in range(20):
        a = assign_splits(result.entries, seed=seed, grouping=grouping)
        assert a["astro_a"].split == a["astro_b"].split == a["astro_fake"].split
        assert a["astro_a"].fold == a["astro_b"].fold


def test_videos_without_a_face_or_undecodable_are_listed_not_clustered(tmp_path):
    _write_video(tmp_path / "wall.mp4", [np.full((128, 128, 3), 90 + i, np.uint8) for i in range(10)])
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 100)
    out = embed_videos([("wall", str(tmp_path / "wall.mp4")), ("junk", str(tmp_path / "junk.mp4"))], frames=3)
    assert out.embeddings == {} and out.no_face == ["wall"]
    assert list(out.failed) == ["junk"] and str(tmp_path / "junk.mp4") in out.failed["junk"]


# ------------------------------------------------------------------ real footage (skips without ../shared/data)

# who is who among a subset of realav: provenance.json's ``speaker`` field, the HDTF/VoxCeleb ids in
# the names, and a look at the faces (face3.mp4 of video-retalking is Alexandria Ocasio-Cortez;
# GeneFace's "zozo" is Theresa May, as MimicTalk's May_5s)
REALAV_PEOPLE = {
    "OpenTalker__SadTalker/WDA_AlexandriaOcasioCortez_000.mp4": "aoc",
    "OpenTalker__video-retalking/face3.mp4": "aoc",
    "tencent-ailab__V-Express/short_case_AOC_gt.mp4": "aoc",
    "Hangz-nju-cuhk__Talking-Face_PC-AVS/Audio_Source_741400104.mp4": "id07414",
    "Hangz-nju-cuhk__Talking-Face_PC-AVS/Pose_Source_741400163.mp4": "id07414",
    "yerfor__GeneFace/zozo_radnerf_torso_smo.mp4": "may",
    "yerfor__MimicTalk/May_5s.mp4": "may",
    "HelloVision__HelloMeme/drive_xzy1.mp4": "xzy",
    "HelloVision__HelloMeme/drive_xzy3.mp4": "xzy",
    "OpenTalker__SadTalker/WDA_BobMenendez_000.mp4": "menendez",
    "OpenTalker__SadTalker/WDA_EdMarkey0_000.mp4": "markey",
    "OpenTalker__SadTalker/WDA_KatieHill_000.mp4": "hill",
    "yerfor__MimicTalk/Trump_10s.mp4": "trump",
    "yerfor__MimicTalk/German_20s.mp4": "german",
    "Hangz-nju-cuhk__Talking-Face_PC-AVS/Pose_Source_00473.mp4": "stewart",
    "HelloVision__HelloMeme/drive_nhs.mp4": "nhs",
}


def test_speakers_of_the_real_footage_share_a_group_and_a_split():
    """16 real clips of 11 people, 5 of them in 2-3 clips from different repositories: every
    same-speaker pair is paired, and no pair of different speakers is."""
    if not (REALAV / "provenance.json").exists():
        pytest.skip(f"{REALAV} is absent (real clips live in ../shared/data)")
    from tasks.ingest.faces import FaceDetector
    from tasks.ingest.identity import FaceEmbedder

    embedder = FaceEmbedder()
    with FaceDetector() as detector:
        emb = {rel: embed_video(str(REALAV / rel), detector, embedder).embedding for rel in REALAV_PEOPLE}
    assert all(e is not None for e in emb.values())
    ids = {rel.replace("/", "__").removesuffix(".mp4"): rel for rel in REALAV_PEOPLE}
    clusters = cluster_faces({vid: emb[rel] for vid, rel in ids.items()})
    pairs = list(itertools.combinations(sorted(ids), 2))
    same = {(a, b) for a, b in pairs if REALAV_PEOPLE[ids[a]] == REALAV_PEOPLE[ids[b]]}
    paired = {(a, b) for a, b in pairs if clusters[a] == clusters[b]}
    assert len(same) == 6
    assert paired == same  # precision and recall 1 on this subset

    entries = [_entry(vid) for vid in ids]
    for seed in range(5):
        split = {vid: a.split for vid, a in assign_splits(entries, seed=seed, identities=clusters).items()}
        assert all(split[a] == split[b] for a, b in same)
