"""Which encoding for face frames in shards? Size and decode speed on real face crops.

    python bench/encoding.py [VIDEO]   (default: a real DFDC sample from ../shared/data, else a generated one)

Prints bytes per clip and clips/s decoded for: npy (raw uint8), JPEG q90 per frame, and
one H.264 mp4 per clip; the ratios are against npy measured in the same run.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from storage.shard_schema import decode_jpeg, decode_npy, encode_jpeg, encode_npy
from tasks.ingest.faces import FaceDetector
from tasks.ingest.preprocess import PreprocessConfig, preprocess_video


def _default_video() -> str:
    shared = sorted(Path(__file__).resolve().parents[2].glob("shared/data/dfdc_sample/*.mp4"))
    if shared:
        return str(shared[0])
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    root = make_dfdc_sample(tempfile.mkdtemp(), n_real=1, size=(640, 640), duration_s=10.0)
    return str(next(Path(root).rglob("*.mp4")))


def encode_mp4(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=Fraction(5))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            out.mux(s.encode(vf))
        out.mux(s.encode())
    return buf.getvalue()


def decode_mp4(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _time(fn, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    video = sys.argv[1] if len(sys.argv) > 1 else _default_video()
    with FaceDetector() as det:
        clip = preprocess_video(video, PreprocessConfig(), det).clips[0]
    frames = clip.frames  # (16, 224, 224, 3)
    variants = {
        "npy": (lambda: encode_npy(frames), decode_npy),
        "jpeg_q90": (lambda: b"".join(encode_jpeg(f, 90) for f in frames), None),
        "mp4_h264": (lambda: encode_mp4(frames), decode_mp4),
    }
    jpegs = [encode_jpeg(f, 90) for f in frames]
    rows = {}
    for name, (enc, dec) in variants.items():
        data = enc()
        if name == "jpeg_q90":
            seconds = _time(lambda: [decode_jpeg(j) for j in jpegs], 20)
            restored = np.stack([decode_jpeg(j) for j in jpegs])
        else:
            seconds = _time(lambda: dec(data), 20)
            restored = dec(data)
        psnr = 10 * np.log10(255**2 / max(np.mean((restored.astype(float) - frames) ** 2), 1e-9))
        rows[name] = {"bytes_per_clip": len(data), "decode_clips_per_s": 1 / seconds, "psnr_db": min(psnr, 99.0)}
    base = rows["npy"]
    print(
        f"video: {video}\n{'encoding':10s} {'kB/clip':>9s} {'x npy size':>10s} {'clips/s':>9s} {'x npy speed':>11s} {'PSNR dB':>8s}"
    )
    for name, r in rows.items():
        print(
            f"{name:10s} {r['bytes_per_clip'] / 1e3:9.1f} {r['bytes_per_clip'] / base['bytes_per_clip']:10.3f} "
            f"{r['decode_clips_per_s']:9.1f} {r['decode_clips_per_s'] / base['decode_clips_per_s']:11.3f} {r['psnr_db']:8.1f}"
        )
    out = Path(__file__).parent / "results" / "encoding.json"
    out.write_text(json.dumps({"video": video, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
