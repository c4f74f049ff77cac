"""Bytes the train loader's shuffle buffer holds per worker: float32 tensors (before issue 26) vs uint8 clips (now).

    python bench/loader.py                           # bench/train.py's 224 px ingest shards, the default buffer
    python bench/loader.py --shards DIR --img-size 112 --buffer 256

Each DataLoader worker runs its own buffer of ``shuffle_buffer`` clips (``TrainSettings``' default
unless ``--buffer``). A full buffer's items are summed directly (array ``nbytes``, not RSS), cycling
through the train clips until there are as many as the buffer holds, in the same run:

- ``float32``  what it held before issue 26: ``clip_to_tensors`` of each clip, video (3, T, H, W) and
               audio (1, F, Tm), both float32;
- ``uint8``    what it holds now: the decoded clip after ``shrink_clip``, frames (T, H, W, 3) uint8
               and mel (F, Tm) float16, converted to float only after the buffer.

Target (issue 26): <= 0.7 GB per worker at 224 px with the default buffer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

from bench.train import ensure_shards  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "loader.json"
TARGET_BYTES = 0.7e9


def buffer_bytes(clips: list, buffer: int, img_size: int | None) -> dict[str, int]:
    """Bytes of a full shuffle buffer of ``buffer`` clips (``clips`` cycled), as float32 tensors and as uint8 clips."""
    from avff_model.inputs import clip_to_tensors
    from tasks.train.data import shrink_clip

    before = after = 0
    for clip in itertools.islice(itertools.cycle(clips), buffer):
        sample = clip_to_tensors(clip, img_size=img_size)  # one at a time: never 2.5 GB at once here
        before += sample["video"].nbytes + sample["audio"].nbytes
        kept = shrink_clip(clip, img_size)
        after += kept.frames.nbytes + kept.mel.nbytes
    return {"float32": before, "uint8": after}


def main(argv: list[str] | None = None) -> dict:
    from storage import fs
    from storage.shard_io import read_clips
    from tasks.train.data import shard_urls
    from tasks.train.settings import TrainSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", help="an ingest output root (default: bench/train.py's, made once under $TMPDIR)")
    ap.add_argument("--buffer", type=int, default=TrainSettings.model_fields["shuffle_buffer"].default)
    ap.add_argument("--img-size", type=int, default=224, help="the model's frame size (default: %(default)s)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    layout = fs.IngestLayout(str(ensure_shards(args.shards)))
    clips = list(itertools.islice((c for url in shard_urls(layout, "train") for c in read_clips(url)), args.buffer))
    sizes = buffer_bytes(clips, args.buffer, args.img_size)
    shape = {"frames": list(clips[0].frames.shape), "mel": list(clips[0].mel.shape)}
    print(f"shuffle buffer of {args.buffer} clips at {args.img_size} px (shard clips: frames {shape['frames']} uint8, "
          f"mel {shape['mel']} float16; {len(clips)} distinct clips cycled), bytes per loader worker:")  # fmt: skip
    for name, n in sizes.items():
        print(f"  {name:8s} {n / 1e9:6.3f} GB  ({n / args.buffer / 1e6:.2f} MB per clip)")
    ok = sizes["uint8"] <= TARGET_BYTES
    print(f"{'PASS' if ok else 'FAIL'}  uint8 buffer <= {TARGET_BYTES / 1e9} GB per worker; "
          f"{sizes['float32'] / sizes['uint8']:.2f}x fewer bytes than float32")  # fmt: skip
    result = {"command": "loader.py " + " ".join(argv if argv is not None else sys.argv[1:]), "buffer": args.buffer,
              "img_size": args.img_size, "clip_shape": shape, "bytes_per_worker": sizes,
              "target": {"uint8_bytes_max": TARGET_BYTES, "pass": ok}}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
