"""identities=auto on the real footage: pairwise precision and recall of the face clusters.

    python bench/identities.py [--data DIR] [--thresholds 0.3 0.4 0.5 0.6]

Scans ``../shared/data/realav`` as ingest does (byte-identical copies dropped), embeds the videos
``identities=auto`` embeds (:func:`tasks.ingest.identity.roots`: REAL videos and fakes without
their original), clusters them at each threshold and scores every pair of videos: a pair is
*true* when :data:`PEOPLE` puts both in one person, *predicted* when they share a cluster.
Every video not in :data:`PEOPLE` is a person of its own. CPU seconds per video are reported too.

:data:`PEOPLE` comes from provenance.json's ``speaker`` field, dataset ids in the file names
(HDTF, VoxCeleb ``id07414``, MEAD ``M030``) and a look at the faces where the provenance says
"unknown" (two GRID speakers, the PC-AVS woman, Stephen Chow in two HelloMeme clips). It may
miss some pairs it could not tell (other GRID speakers), which would count as false positives.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np

from tasks.ingest.faces import FaceDetector
from tasks.ingest.identity import FaceEmbedder, cluster_faces, embed_video, roots
from tasks.ingest.scan import scan_dfdc

REALAV = Path(__file__).resolve().parents[2] / "shared" / "data" / "realav"

PEOPLE = {
    "aoc": ["OpenTalker__SadTalker/WDA_AlexandriaOcasioCortez_000.mp4", "OpenTalker__video-retalking/face3.mp4",
            "tencent-ailab__V-Express/short_case_AOC_gt.mp4"],
    "face1": ["HuyVux-dev__Wav2Lip-Preprocess-Face/face_1.mp4", "OpenTalker__video-retalking/face1.mp4",
              "Zz-ww__SadTalker-Video-Lip-Sync/original.mp4", "HuyVux-dev__Wav2Lip-Preprocess-Face/output_video_test.mp4"],
    "id07414": ["Hangz-nju-cuhk__Talking-Face_PC-AVS/Audio_Source_741400104.mp4",
                "Hangz-nju-cuhk__Talking-Face_PC-AVS/Pose_Source_741400163.mp4"],
    "pcavs_woman": ["Hangz-nju-cuhk__Talking-Face_PC-AVS/Input_00002.mp4",
                    "Hangz-nju-cuhk__Talking-Face_PC-AVS/Pose_Source_517600055.mp4"],
    "may": ["yerfor__GeneFace/zozo_radnerf_torso_smo.mp4", "yerfor__MimicTalk/May_5s.mp4"],
    "xzy": ["HelloVision__HelloMeme/drive_xzy1.mp4", "HelloVision__HelloMeme/drive_xzy2.mp4",
            "HelloVision__HelloMeme/drive_xzy3.mp4"],
    "chow": ["HelloVision__HelloMeme/drive_jue.mp4", "HelloVision__HelloMeme/drive_tbh.mp4"],
    "m030": ["jixinya__EAMM/M030_sad_3_001.mp4", "jixinya__EAMM/emotion_driving_sad.mp4",
             "jixinya__EAMM/emotion_driving_disgusted.mp4"],
    "monalisa": ["deepbrainai-research__float/float_ood_monarisa.mp4", "tencent-ailab__V-Express/emo_talk_mola_gt.mp4"],
    "altman": ["deepbrainai-research__float/float_ood_altman.mp4", "deepbrainai-research__float/sam_altman_result.mp4"],
    "art0": ["OpenTalker__SadTalker/art_0__japanese.mp4", "OpenTalker__SadTalker/art_0__japanese_es1.mp4",
             "OpenTalker__SadTalker/art_0__japanese_es2.mp4", "OpenTalker__SadTalker/art_0__japanese_still.mp4"],
    "still": ["OpenTalker__SadTalker/still1.mp4", "OpenTalker__SadTalker/still_e.mp4", "OpenTalker__SadTalker/still_full_e.mp4"],
    "dreamtalk_male": ["ali-vilab__dreamtalk/dreamtalk_ack_english_male_face.mp4",
                       "ali-vilab__dreamtalk/dreamtalk_ack_english_male_face_sr512.mp4"],
    "grid_a": ["AnshSareen__Deep-Learning-Based-Lip-Reading/video_20251207_154307_b7d7e7a1.mp4",
               "rizkiarm__LipNet/id2_vcd_swwp2s.mpg", "rizkiarm__LipNet/pwij3p.mpg"],
    "grid_b": ["AnshSareen__Deep-Learning-Based-Lip-Reading/video_20251208_015857_cac80689.mpg", "rizkiarm__LipNet/bbaf2n.mpg"],
}  # fmt: skip


def pair_scores(person: dict[str, str], cluster: dict[str, str]) -> dict[str, float]:
    """Pairwise precision and recall of ``cluster`` against ``person`` (both video -> name)."""
    pairs = list(itertools.combinations(sorted(cluster), 2))
    true = {p for p in pairs if person[p[0]] == person[p[1]]}
    predicted = {p for p in pairs if cluster[p[0]] == cluster[p[1]]}
    hit = len(true & predicted)
    return {"true_pairs": len(true), "predicted_pairs": len(predicted), "correct": hit,
            "precision": hit / len(predicted) if predicted else 1.0, "recall": hit / len(true) if true else 1.0,
            "clusters": len(set(cluster.values()))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REALAV))
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.35, 0.4, 0.45, 0.5, 0.6])
    args = ap.parse_args()
    person_of = {f: p for p, files in PEOPLE.items() for f in files}
    entries = roots(scan_dfdc(args.data).entries)
    embeddings, person, cpu, no_face = {}, {}, [], []
    embedder = FaceEmbedder()
    with FaceDetector() as detector:
        for e in entries:
            t = time.process_time()
            face = embed_video(os.path.join(args.data, e.rel_path), detector, embedder)
            cpu.append(time.process_time() - t)
            if face.embedding is None:
                no_face.append(e.rel_path)
                continue
            embeddings[e.video_id] = face.embedding
            person[e.video_id] = person_of.get(e.rel_path, e.rel_path)
    print(f"{len(entries)} videos embedded ({len(no_face)} without a face: {no_face}); "
          f"CPU s per video: median {np.median(cpu):.2f}, max {max(cpu):.2f}")  # fmt: skip
    print("| threshold | clusters | true pairs | predicted pairs | correct | precision | recall |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for t in args.thresholds:
        s = pair_scores(person, cluster_faces(embeddings, threshold=t))
        print(f"| {t:.2f} | {s['clusters']} | {s['true_pairs']} | {s['predicted_pairs']} | {s['correct']} "
              f"| {s['precision']:.3f} | {s['recall']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
