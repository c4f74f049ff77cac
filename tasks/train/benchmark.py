"""The training side of the generator's benchmark (bench/results.py): splits, stage 1, the variants' settings.

Per seed the benchmark generates a training set, ingests it with a grouped split whose val holds at
least ``n_val`` identities (:func:`split_ratios`, :func:`split_seed`), optionally pretrains stage 1 on
real-only identities (:func:`pretrain_settings`), and trains named variants. A variant is what
``avff ablate`` calls one: overrides of a base :class:`~tasks.train.settings.TrainSettings`, merged by
:meth:`tasks.train.experiment_settings.AblationConfig.variant_config` (:func:`variant_settings`),
so the benchmark and the ablation flow build a variant's run the same way. No flow, Prefect or Ray here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from storage import fs
from storage.shard_schema import FAKE, LABELS
from storage.tables import ManifestRow, read_table
from tasks.ingest.scan import scan_dfdc
from tasks.ingest.splits import assign_splits
from tasks.train.experiment_settings import AblationConfig
from tasks.train.pseudo_fakes import AUDIO_KINDS, STAND_INS, VISUAL_KINDS, kinds_drawn
from tasks.train.settings import TrainSettings

TEST_RATIO = 0.1  # the training set's own test split: run_training reports it; the benchmark scores the external sets
# what every variant's stage 2 shares unless --set moves it (the tiny preset on CPU)
STAGE2 = {"batch_size": 8, "lr": 3e-4, "patience": 4, "device": "cpu", "report_bootstrap": 20, "num_workers": 0}


def split_ratios(n_real: int, n_val: int) -> tuple[float, float, float]:
    """(train, val, test) ratios that put about ``n_val`` + 1 of ``n_real`` identities in val (the hash
    split is not exact; :func:`split_seed` then insists on ``n_val``), TEST_RATIO in test, the rest in train."""
    val = (n_val + 1) / n_real
    train = 1.0 - val - TEST_RATIO
    if train < 0.3:
        raise ValueError(f"--n-real {n_real} leaves too few training identities beside {n_val} validation ones: "
                         f"raise --n-real to at least {math.ceil((n_val + 1) / (0.7 - TEST_RATIO))}")  # fmt: skip
    return train, val, TEST_RATIO


def split_seed(data: Path, ratios: tuple[float, float, float], min_val_groups: int = 1) -> int:
    """The first split seed whose hash split gives every split with a positive ratio a REAL and a
    FAKE video and val at least ``min_val_groups`` identities: on a handful of groups seed 0 can
    leave a split empty (tasks/ingest/splits.py)."""
    entries = scan_dfdc(str(data)).entries
    need = {(s, label) for s, r in zip(("train", "val", "test"), ratios) if r > 0 for label in LABELS}
    for seed in range(100):
        a = assign_splits(entries, ratios, seed=seed)
        val_groups = {x.group for x in a.values() if x.split == "val"}
        if need <= {(a[e.video_id].split, e.label) for e in entries} and len(val_groups) >= min_val_groups:
            return seed
    raise ValueError(f"no split seed below 100 gives every split both labels and val {min_val_groups} identities "
                     f"on {data}: generate more identities")  # fmt: skip


def _ingested(shards: Path, split: str) -> list[ManifestRow]:
    rows = read_table(fs.IngestLayout(str(shards)).manifest, ManifestRow)
    return [r for r in rows if r.split == split and r.status == "ingested"]


def val_identities(shards: Path) -> int:
    """Identities (groups) in the ingested val split: what picks the checkpoint, the calibration and the threshold."""
    return len({r.group for r in _ingested(shards, "val")})


def train_prior(shards: Path) -> float:
    """The video-level FAKE fraction of the ingested training split: the prior baseline's P(FAKE)."""
    rows = _ingested(shards, "train")
    return sum(r.label == FAKE for r in rows) / len(rows)


def pretrain_settings(shards: Path, output_dir: Path, *, epochs: int, seed: int, w_sync: float,
                      overrides: dict[str, Any] | None = None) -> TrainSettings:  # fmt: skip
    """Stage 1 alone on ``shards`` (real-only, all train), the lip-sync loss weighted by ``w_sync`` (0: the preset's);
    ``overrides``: the model config fields every variant shares (e.g. the tubelet), so that its encoders fit them."""
    return TrainSettings(data=str(shards), output_dir=str(output_dir), stages="pretrain", pretrain_epochs=epochs,
                         batch_size=8, lr=1e-3, device="cpu", seed=seed, num_workers=0,
                         overrides={**(overrides or {}), **({"w_sync": w_sync} if w_sync else {})})  # fmt: skip


def variant_fields(name: str, own: dict[str, Any]) -> dict[str, Any]:
    """Variant ``name``'s overrides: its fusion head is its name unless ``own`` gives one."""
    return {"fusion": name, **own}


def variant_settings(base: TrainSettings, name: str, own: dict[str, Any], output_dir: str | Path) -> TrainSettings:
    """``base`` with variant ``name``'s fields (:func:`variant_fields`; nested mappings such as ``overrides``
    merge key by key), as ``avff ablate`` builds a variant's run, written to ``output_dir``."""
    config = AblationConfig(base=base, variants={name: variant_fields(name, own)}, seeds=[base.seed],
                            log_checkpoints=base.log_checkpoints)  # fmt: skip
    return config.variant_config(name, base.seed).replace(output_dir=str(output_dir))


def drawn_kinds(settings: TrainSettings, held_out: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The pseudo-fake kinds a run with ``settings`` draws (with ``held_out`` types' stand-ins off) and can
    see: a uni-modal head cannot learn from a kind that alters only the other modality (to it, label noise)."""
    blind = {"video_only": AUDIO_KINDS, "audio_only": VISUAL_KINDS}.get(settings.fusion or "", ())
    return tuple(k for k in kinds_drawn(settings.pseudo_fakes, (*settings.exclude_manipulations, *held_out))
                 if k not in blind)  # fmt: skip


def stood_in(drawn: tuple[str, ...]) -> frozenset[str]:
    """The manipulation types a run drawing pseudo-fake kinds ``drawn`` trained on a stand-in of
    (:data:`~tasks.train.pseudo_fakes.STAND_INS`): its AUC on them may move only because that stand-in was on."""
    return frozenset(t for t, kinds in STAND_INS.items() if set(kinds) & set(drawn))
