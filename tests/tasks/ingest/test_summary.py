"""The ingest summary's pure parts: totals that add up, the refused-video table, probe facts, progress."""

import pytest

from storage.tables import ManifestRow, RefusedRow
from tasks.ingest.summary import progress, probe_lines, refused_rows, totals, totals_lines


def _manifest(statuses):
    return [ManifestRow(video_id=f"v{i}", part="p", rel_path=f"p/v{i}.mp4", label="REAL", status=s,
                        duration=10.0 + i, fps=30.0, width=1920, height=1080, rotation=0, has_audio=True,
                        audio_rate=44100, split="train", fold=0, group=f"v{i}")
            for i, s in enumerate(statuses)]  # fmt: skip


def _quarantine(rows):
    return [RefusedRow(video_id=v, part="p", rel_path=path, label=None, reason=reason, error=error)
            for v, path, reason, error in rows]  # fmt: skip


def test_totals_add_up_and_tell_entries_from_files():
    manifest = _manifest(["ingested", "ingested", "ingested", "quarantined"])  # 4 entries reached decoding
    quarantine = _quarantine([
        ("v3", "p/v3.mp4", "no_face", "p/v3.mp4: no face in 0 of 48 frames"),
        (None, "p/extra.mp4", "missing_metadata", "p/extra.mp4: no entry in p/metadata.json"),
        (None, "p/gone.mp4", "missing_file", "p/gone.mp4: listed in metadata.json, not on disk"),
    ])  # fmt: skip
    t = totals(manifest, quarantine)
    assert t == {"considered": 6, "metadata_entries": 5, "files_without_entry": 1, "ingested": 3, "quarantined": 3,
                 "refused_before_decoding": 2, "refused_while_decoding": 1, "unaccounted": 0}  # fmt: skip
    text = "\n".join(totals_lines(t))
    assert "videos considered: 6 = 5 metadata entries + 1 video files without an entry" in text
    assert "3 + 3 = 6" in text and "unaccounted" not in text


def test_refused_rows_name_every_video_with_its_last_error_line():
    quarantine = _quarantine([
        ("b", "p/b.mp4", "undecodable", "Traceback ...\n  File x\np/b.mp4: invalid data found\n"),
        ("a", "p/a.mp4", "no_audio", "p/a.mp4: no audio stream"),
    ])  # fmt: skip
    assert refused_rows(quarantine) == [
        {"video": "p/a.mp4", "reason": "no_audio", "message": "p/a.mp4: no audio stream"},
        {"video": "p/b.mp4", "reason": "undecodable", "message": "p/b.mp4: invalid data found"},
    ]
    capped = refused_rows(quarantine, limit=1)
    assert len(capped) == 2 and capped[1]["video"] == "... 1 more"


def test_probe_lines_summarise_the_ingested_videos():
    text = "\n".join(probe_lines(_manifest(["ingested", "ingested", "quarantined"])))
    assert "duration: 10.0 / 10.5 / 11.0 s" in text  # the quarantined one is not counted
    assert "resolution: 1920x1080 x 2" in text and "audio: 2 of 2 with an audio stream (44100 Hz x 2)" in text


def test_progress_gives_rate_and_eta():
    assert progress(10, 40, 20.0) == (25.0, "10 / 40 videos, 0.50 videos/s, ETA 60 s")
    assert progress(0, 40, 0.0)[1].endswith("ETA n/a")
    assert progress(40, 40, 80.0) == (100.0, "40 / 40 videos, 0.50 videos/s, done")
    assert progress(0, 0, 0.0)[0] == pytest.approx(100.0)
