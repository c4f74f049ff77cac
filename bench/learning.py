"""Why the AVFF core learns nothing on the lip-sync fakes (issue 22): the separating experiments.

    uv run python bench/learning.py --quick                      # every experiment, tiny sizes (~3 min)
    uv run python bench/learning.py frozen trained sync ids      # docs/learning.md's runs (~30 min each, one core)
    uv run python bench/learning.py trained --head avff_concat   # one experiment, another head (--tubelet 1 ...)
    uv run python bench/learning.py unseen:audio_swap --steps 200  # one type's fakes kept out of training
    uv run python bench/learning.py --report docs/learning.md    # rewrite docs/learning.md's tables

No signal branches anywhere (``sync_branch=False, texture_branch=False``): the paper's model only.
Clips come from the synthetic generator in-process (bench/learning_data.py): one REAL and one fake
per lip-sync type (lipsync_offset, audio_swap, mouth_decorrelated) per identity; training
identities from the generator's ``train`` pool, held-out identities from its ``external`` pool
(no shared face or voice). Every AUC below is REAL vs one type's fakes of held-out identities.

Experiments (each a function, each a table in the written report):
  head   cause 1: today's avff_concat head against avff_agree (temporal agreement of each token with
         its A2V / V2A prediction), with encoders trained or frozen at random init; and a linear
         probe of the generator's true mouth opening from video tokens.
  sync   cause 3: stage 1 on REAL clips of the ``pretrain`` pool for a few and for more steps; the
         sync margin (video reconstruction error on mouth tokens, hidden slices filled by A2V of another
         clip's audio minus of the clip's own audio; > 0 = stage 1 uses the audio); stage 2 from it.
  ids    cause 2: identities x steps learning curve, train vs held-out AUC.
  margin:DIR  cause 3 on a stage-1 run made elsewhere (bench/results.py's seedN/pretrain): its sync margin.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
from avff_model import AVFF, get_config  # noqa: E402
from bench.learning_data import KINDS, cached_clips, to_model  # noqa: E402

LIPSYNC = KINDS[1:]
BEGIN, END = "<!-- tables: bench/learning.py --report -->", "<!-- end of tables -->"


@dataclass
class Clips:
    """Normalised model inputs of one pool: video (N, 3, T, H, W), audio (N, 1, F, Tm), labels (N,)."""

    video: torch.Tensor
    audio: torch.Tensor
    label: torch.Tensor
    kind: torch.Tensor
    ident: torch.Tensor
    mouth: torch.Tensor  # (N, T)

    @classmethod
    def of(cls, raw: dict, n_ids: int | None = None) -> Clips:
        keep = raw["ident"] < n_ids if n_ids is not None else torch.ones_like(raw["ident"], dtype=torch.bool)
        v, a = to_model(raw["video"][keep], raw["mel"][keep])
        return cls(v, a, raw["label"][keep].float(), raw["kind"][keep], raw["ident"][keep], raw["mouth"][keep])

    def subset(self, idx: torch.Tensor) -> Clips:
        return Clips(*(getattr(self, f)[idx] for f in ("video", "audio", "label", "kind", "ident", "mouth")))


def build(head: str = "avff_concat", seed: int = 0, **overrides) -> AVFF:
    """The tiny paper model, no signal branches."""
    torch.manual_seed(seed)
    cfg = get_config("tiny", fusion=head, sync_branch=False, texture_branch=False, **overrides)
    return AVFF(cfg)


@torch.no_grad()
def logits_of(model: AVFF, data: Clips, batch: int = 64) -> torch.Tensor:
    model.eval()
    out = [model(data.video[i : i + batch], data.audio[i : i + batch]) for i in range(0, len(data.label), batch)]
    model.train()
    return torch.cat(out).float()


def aucs(model: AVFF, data: Clips) -> dict[str, float]:
    """REAL vs each lip-sync type's fakes: {kind: AUC}, plus "all"."""
    return _per_kind(logits_of(model, data).numpy(), data.label.numpy(), data.kind.numpy())


def _per_kind(p: np.ndarray, y: np.ndarray, k: np.ndarray) -> dict[str, float]:
    """scores p, labels y, kinds k (N,) -> {type: AUC of REAL vs that type, "all": AUC}."""
    out = {
        name: float(roc_auc_score(y[(k == 0) | (k == i)], p[(k == 0) | (k == i)])) for i, name in enumerate(KINDS) if i
    }
    out["all"] = float(roc_auc_score(y, p))
    return out


def train_stage2(model: AVFF, train: Clips, test: Clips, *, steps: int, batch: int = 16, lr: float = 1e-3,
                 freeze_encoders: bool = False, evals: tuple[int, ...] = (), seed: int = 0) -> list[dict]:  # fmt: skip
    """BCE on balanced batches (half REAL, half FAKE of random types); -> curve rows at ``evals`` + the end."""
    params = list(model.head.parameters()) if freeze_encoders else list(model.classifier_parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    warmup_cosine = lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)
    g = torch.Generator().manual_seed(seed)
    real, fake = (train.label == 0).nonzero().flatten(), (train.label == 1).nonzero().flatten()
    probe = torch.randperm(len(train.label), generator=g)[:256]
    rows, t0 = [], time.time()
    for step in range(1, steps + 1):
        idx = torch.cat([real[torch.randint(len(real), (batch // 2,), generator=g)],
                         fake[torch.randint(len(fake), (batch // 2,), generator=g)]])  # fmt: skip
        loss = F.binary_cross_entropy_with_logits(model(train.video[idx], train.audio[idx]).float(), train.label[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        if step in evals or step == steps:
            rows.append({"step": step, "loss": loss.item(), "train": aucs(model, train.subset(probe))["all"],
                         **aucs(model, test), "s": round(time.time() - t0)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- heads on frozen features
@torch.no_grad()
def features(model: AVFF, data: Clips, batch: int = 64) -> dict[str, torch.Tensor]:
    """The frozen token features every token head reads: video, audio, a2v, v2a (N, L, D)."""
    model.eval()
    parts = [model.forward_features(data.video[i : i + batch], data.audio[i : i + batch], ("video", "audio", "a2v", "v2a"))
             for i in range(0, len(data.label), batch)]  # fmt: skip
    model.train()
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def head_aucs(head: torch.nn.Module, feats: dict, data: Clips) -> dict[str, float]:
    head.eval()
    with torch.no_grad():
        p = torch.cat([head({k: v[i : i + 256] for k, v in feats.items()}) for i in range(0, len(data.label), 256)])
    head.train()
    p, y, k = p.float().numpy(), data.label.numpy(), data.kind.numpy()
    return _per_kind(p, y, k)


def train_head(head_name: str, encoder: AVFF, f_train: dict, train: Clips, f_test: dict, test: Clips, *, steps: int,
               batch: int = 32, lr: float = 1e-3, seed: int = 0) -> dict:  # fmt: skip
    """A fresh head of ``head_name`` (grids bound as AVFF binds them) trained on frozen features."""
    head = build(head_name, seed=seed, tubelet=encoder.cfg.tubelet).head
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    real, fake = (train.label == 0).nonzero().flatten(), (train.label == 1).nonzero().flatten()
    for _ in range(steps):
        idx = torch.cat([real[torch.randint(len(real), (batch // 2,), generator=g)],
                         fake[torch.randint(len(fake), (batch // 2,), generator=g)]])  # fmt: skip
        loss = F.binary_cross_entropy_with_logits(
            head({k: v[idx] for k, v in f_train.items()}).float(), train.label[idx]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"train": head_aucs(head, f_train, train)["all"], **head_aucs(head, f_test, test)}


def heads_on_frozen(encoder: AVFF, train: Clips, test: Clips, steps: int) -> dict:
    f_train, f_test = features(encoder, train), features(encoder, test)
    out = {}
    for name in ("avff_concat", "avff_agree"):
        out[name] = train_head(name, encoder, f_train, train, f_test, test, steps=steps)
        print(name, json.dumps(out[name]), flush=True)
    return out


# ---------------------------------------------------------------- stage 1 and the sync margin
def train_stage1(
    model: AVFF, real: Clips, *, steps: int, batch: int = 16, lr: float = 1e-3, seed: int = 0
) -> list[dict]:
    """The stage-1 losses (docs/model.md) on REAL clips; -> [{step, loss, recon_video, ...}] every 100 steps."""
    opt_g = torch.optim.AdamW(model.generator_parameters(), lr=lr, weight_decay=0.05)
    opt_d = torch.optim.AdamW(model.discriminator_parameters(), lr=lr, weight_decay=0.05)
    g, rows = torch.Generator().manual_seed(seed), []
    for step in range(1, steps + 1):
        idx = torch.randint(len(real.label), (batch,), generator=g)
        losses = model.pretrain_losses(real.video[idx], real.audio[idx], generator=g)
        opt_g.zero_grad(), opt_d.zero_grad()
        (losses["loss"] + losses["disc_loss"]).backward()
        opt_g.step(), opt_d.step()
        if step % 100 == 0 or step == steps:
            rows.append({"step": step, **{k: round(float(v), 4) for k, v in losses.items()}})
    return rows


def mouth_positions(data: Clips, cfg, top: int = 2) -> torch.Tensor:
    """(top,) spatial token positions (row-major on the H' x W' grid) whose mean pixel follows the
    generator's true mouth opening best over REAL clips: where the mouth is in the crop."""
    real = data.subset((data.label == 0).nonzero().flatten())
    g = cfg.img_size // cfg.patch
    pix = real.video.mean(1).unflatten(2, (g, cfg.patch)).unflatten(4, (g, cfg.patch)).mean((3, 5))  # (N, T, g, g)
    x = pix.flatten(2) - pix.flatten(2).mean(1, keepdim=True)  # (N, T, g*g)
    m = (real.mouth - real.mouth.mean(1, keepdim=True))[..., None]  # (N, T, 1)
    corr = (x * m).sum(1) / (x.norm(dim=1) * m.norm(dim=1) + 1e-6)  # (N, g*g)
    return corr.mean(0).abs().topk(top).indices


@torch.no_grad()
def sync_margin(model: AVFF, real: Clips, mouth: torch.Tensor, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per REAL clip: video reconstruction MSE on hidden mouth tokens, hidden slices filled by A2V of
    another clip's audio minus by A2V of its own audio (same mask). -> mean, 95 % bootstrap interval."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    n = len(real.label)
    perm = (torch.arange(n) + 1 + torch.randint(n - 1, (1,), generator=g)) % n  # another clip for each
    ve, cfg = model.video_encoder, model.cfg
    s = (cfg.img_size // cfg.patch) ** 2
    is_mouth = torch.isin(torch.arange(cfg.num_video_tokens) % s, mouth)  # (L_v,)
    diffs = []
    for i in range(0, n, 32):
        sl = slice(i, i + 32)
        v, a, a_other = real.video[sl], real.audio[sl], real.audio[perm[sl]]
        _, mask_v, mask_a = model.sample_masks(v.shape[0], g)
        tok_v = ve(v, mask_v)  # (B, L_v, D_v)
        target = ve.patchify(v)  # (B, L_v, P_v)
        err = []
        for audio in (a, a_other):
            pred = model.video_decoder(
                torch.where(mask_v[..., None], model.a2v(model.audio_encoder(audio, mask_a)), tok_v)
            )
            per_tok = (pred - target).pow(2).mean(-1)  # (B, L_v)
            sel = mask_v & is_mouth
            err.append((per_tok * sel).sum(1) / sel.sum(1).clamp(min=1))  # (B,)
        diffs.append(err[1] - err[0])
    model.train()
    d = torch.cat(diffs).numpy()
    boot = np.random.default_rng(seed).choice(d, (n_boot, len(d))).mean(1)
    return {"margin": float(d.mean()), "lo": float(np.percentile(boot, 2.5)), "hi": float(np.percentile(boot, 97.5)),
            "rel": float(d.mean() / max(1e-9, float(np.abs(d).mean()))), "diffs": d.tolist()}  # fmt: skip


def pooled_margin(runs: list[list[float]], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """The sync margin of several stage-1 runs measured on the same clips (``runs``: per run, per clip):
    mean over runs, and a two-level 95 % bootstrap (runs drawn with replacement, then the clips, the same
    draw for every run), so the interval carries what training a run gave and which clips were scored."""
    d = np.asarray(runs, dtype=np.float64)  # (R, N)
    rng = np.random.default_rng(seed)
    r = rng.integers(len(d), size=(n_boot, len(d)))  # (n_boot, R)
    c = rng.integers(d.shape[1], size=(n_boot, d.shape[1]))  # (n_boot, N)
    boot = np.array([d[r[b]][:, c[b]].mean() for b in range(n_boot)])
    return {"margin": float(d.mean()), "lo": float(np.percentile(boot, 2.5)), "hi": float(np.percentile(boot, 97.5))}


# ---------------------------------------------------------------- the mouth-opening probe
@torch.no_grad()
def mouth_probe(model: AVFF, train: Clips, test: Clips, mouth: torch.Tensor, ridge: float = 10.0) -> float:
    """Held-out R^2 of a ridge probe: frozen video tokens at the mouth positions -> the generator's true
    mouth opening averaged over each token's frames. REAL clips only (their mouth follows their audio)."""
    cfg = model.cfg
    s, tt = (cfg.img_size // cfg.patch) ** 2, cfg.num_frames // cfg.tubelet

    def xy(data: Clips) -> tuple[torch.Tensor, torch.Tensor]:
        real = data.subset((data.label == 0).nonzero().flatten())
        model.eval()
        tok = torch.cat([model.video_encoder(real.video[i : i + 64]) for i in range(0, len(real.label), 64)])
        model.train()
        tok = tok.unflatten(1, (tt, s))[:, :, mouth].flatten(2)  # (N, T', top D)
        y = real.mouth.unflatten(1, (tt, cfg.tubelet)).mean(-1)  # (N, T')
        return tok.flatten(0, 1).double(), y.flatten().double()

    (xa, ya), (xb, yb) = xy(train), xy(test)
    mu, sd = xa.mean(0), xa.std(0) + 1e-6
    xa, xb = (xa - mu) / sd, (xb - mu) / sd
    bias = lambda x: torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # noqa: E731
    xa1, xb1 = bias(xa), bias(xb)
    w = torch.linalg.solve(xa1.T @ xa1 + ridge * torch.eye(xa1.shape[1], dtype=xa.dtype), xa1.T @ ya)
    return float(1 - ((xb1 @ w - yb) ** 2).mean() / yb.var())


# ---------------------------------------------------------------- experiments
@dataclass(frozen=True)
class Plan:
    ids: int = 300  # training identities
    test_ids: int = 64
    pretrain_ids: int = 150  # REAL clips of the pretrain pool for stage 1
    steps: int = 400  # stage 2, whole model, batch 16
    head_steps: int = 1500  # heads on frozen features, batch 32
    s1_steps: tuple[int, ...] = (100, 300)  # stage 1, batch 16: the sync margin after each
    ids_curve: tuple[int, ...] = (13, 50, 100, 300)
    evals: tuple[int, ...] = (100, 200, 300)


QUICK = Plan(ids=32, test_ids=16, pretrain_ids=16, steps=20, head_steps=50, s1_steps=(10, 20), ids_curve=(13, 32),
             evals=(10,))  # fmt: skip


def stage1_margin(root: Path, raw: dict, external: dict) -> dict:
    """The sync margin of a stage-1 output folder's last checkpoint (``model_config.json`` and
    ``checkpoints/``, e.g. bench/results.py's ``seedN/pretrain``: its own config, its own w_sync) beside
    the same config at random init, on the REAL clips of ``raw`` (the pretrain pool, the identities stage 1
    trained on) and, under ``"external"``, on the REAL clips of ``external`` (identities it never saw)."""
    from safetensors.torch import load_file

    from avff_model.config import AVFFConfig
    from storage.checkpoint import WEIGHTS, resolve_checkpoint

    cfg = AVFFConfig(**json.loads((root / "model_config.json").read_text()))
    pre = Clips.of(raw)
    pre = pre.subset((pre.label == 0).nonzero().flatten())
    mouth = mouth_positions(pre, cfg)
    torch.manual_seed(0)
    rand, trained = AVFF(cfg), AVFF(cfg)
    state = load_file(str(Path(resolve_checkpoint(str(root / "checkpoints" / "last.json"))) / WEIGHTS))
    missing, _ = trained.load_state_dict(state, strict=False)
    if [k for k in missing if k.startswith(("video_", "audio_", "a2v", "v2a"))]:
        raise ValueError(f"{root}: the checkpoint lacks encoder or cross-modal weights: {missing[:4]}")
    ext = Clips.of(external)
    ext = ext.subset((ext.label == 0).nonzero().flatten())
    epochs = int(json.loads((root / "checkpoints" / "last.json").read_text())["checkpoint"].split("-")[-1])
    return {"stage1": str(root), "w_sync": cfg.w_sync, "w_cross": cfg.w_cross, "tubelet": cfg.tubelet, "epochs": epochs,
            "random init": sync_margin(rand, pre, mouth), "stage 1": sync_margin(trained, pre, mouth),
            "external": {"random init": sync_margin(rand, ext, mouth), "stage 1": sync_margin(trained, ext, mouth)}}  # fmt: skip


def run(exp: str, plan: Plan, cache: str, head: str, tubelet: int) -> dict:
    """One experiment (see the module docstring) -> its results."""
    if exp.startswith("margin:"):  # cause 3 on a stage-1 run made elsewhere (no training here)
        return stage1_margin(Path(exp.split(":", 1)[1]), cached_clips(cache, "pretrain", plan.pretrain_ids),
                             cached_clips(cache, "external", plan.test_ids))  # fmt: skip
    raw_train = cached_clips(cache, "train", max(plan.ids, *plan.ids_curve))
    train, test = Clips.of(raw_train, plan.ids), Clips.of(cached_clips(cache, "external", plan.test_ids))
    mouth = mouth_positions(train, build(tubelet=tubelet).cfg)
    res: dict = {"mouth_tokens": mouth.tolist()}
    if exp == "frozen":  # cause 1: heads on the features of random encoders
        enc = build(tubelet=tubelet)
        res["probe_r2"] = mouth_probe(enc, train, test, mouth)
        res["heads"] = heads_on_frozen(enc, train, test, plan.head_steps)
    elif exp == "trained":  # cause 1: the whole model trained end to end
        model = build(head, tubelet=tubelet)
        res["curve"] = train_stage2(model, train, test, steps=plan.steps, evals=plan.evals)
        res["probe_r2"] = mouth_probe(model, train, test, mouth)
    elif exp == "sync":  # cause 3
        pre = Clips.of(cached_clips(cache, "pretrain", plan.pretrain_ids))
        pre = pre.subset((pre.label == 0).nonzero().flatten())
        model = build(head, tubelet=tubelet)
        res["random init"] = sync_margin(model, pre, mouth)
        print("random init", res["random init"], flush=True)
        done = 0
        for steps in plan.s1_steps:
            res.setdefault("losses", []).extend(train_stage1(model, pre, steps=steps - done, seed=steps))
            done = steps
            row = {**sync_margin(model, pre, mouth), "probe_r2": mouth_probe(model, train, test, mouth)}
            row["heads"] = heads_on_frozen(model, train, test, plan.head_steps)
            res[f"stage 1 {steps} steps"] = row
            print(steps, json.dumps(row), flush=True)
        keep = ("video_encoder.", "audio_encoder.", "a2v.", "v2a.")
        state = {k: v for k, v in model.state_dict().items() if k.startswith(keep)}
        s2 = build(head, tubelet=tubelet)
        s2.load_state_dict(state, strict=False)
        res["stage 2 from stage 1"] = train_stage2(s2, train, test, steps=plan.steps, evals=plan.evals)
    elif exp == "ids":  # cause 2: identities, trained end to end
        for n in plan.ids_curve:
            print("== ids", n, flush=True)
            res[str(n)] = train_stage2(build(head, tubelet=tubelet), Clips.of(raw_train, n), test, steps=plan.steps,
                                       evals=plan.evals)  # fmt: skip
    elif exp.startswith("unseen:"):  # a type's fakes kept out of training, the others in
        kept = train.subset((train.kind != KINDS.index(exp.split(":", 1)[1])).nonzero().flatten())
        res["curve"] = train_stage2(build(head, tubelet=tubelet), kept, test, steps=plan.steps, evals=plan.evals)
    else:
        raise KeyError(f"unknown experiment {exp!r}")
    return res


# ---------------------------------------------------------------- the report
def _row(name: str, r: dict) -> str:
    cells = [f"{r.get(k, float('nan')):.2f}" for k in ("train", *LIPSYNC, "all")]
    return f"| {name} | " + " | ".join(cells) + " |"


_HEADER = (
    "| run | train AUC | lipsync_offset | audio_swap | mouth_decorrelated | all lip-sync |\n"
    "|---|---:|---:|---:|---:|---:|"
)


def _margin_cell(m: dict) -> str:
    return f"{m['margin']:.2e} [{m['lo']:.2e}, {m['hi']:.2e}]"


def _margin_table(margins: list[dict]) -> list[str]:
    """The sync margins of bench/results.py's stage-1 runs: per run, then pooled over a tubelet's runs
    (:func:`pooled_margin`), on the pretrain pool's clips and, where measured, on external identities."""
    out = ["", "Stage 1 of the pipeline benchmark (`bench/learning.py --tubelet T margin:DIR` on bench/results.py's "
           "`seedN/pretrain`: 100 identities of the generator's pretrain pool, batch 8, ingested clips), "
           "its sync margin on this page's REAL clips: the pretrain pool's (identities stage 1 trained on) and the "
           "external pool's (never seen). > 0: A2V's prediction of the hidden mouth tokens is better with the "
           "clip's own audio than with another clip's.", "",
           "| stage-1 run | tubelet | random init, pretrain clips | after stage 1, pretrain clips | "
           "random init, external | after stage 1, external |", "|---|---:|---|---|---|---|"]  # fmt: skip
    for m in margins:
        ext = m.get("external", {})
        cells = [_margin_cell(m[k]) for k in ("random init", "stage 1")]
        cells += [_margin_cell(ext[k]) if k in ext else "—" for k in ("random init", "stage 1")]
        name = f"{Path(m['stage1']).parent.name}, {m.get('epochs', 8)} epochs, w_sync={m['w_sync']:g}"
        out.append(f"| {name} | {m.get('tubelet', 2)} | " + " | ".join(cells) + " |")
    for t, epochs in sorted({(m.get("tubelet", 2), m.get("epochs", 8)) for m in margins}):
        runs = [
            m for m in margins if (m.get("tubelet", 2), m.get("epochs", 8)) == (t, epochs) and "diffs" in m["stage 1"]
        ]
        if len(runs) < 2:
            continue
        cells = []
        for pool in ("pretrain", "external"):
            for k in ("random init", "stage 1"):
                src = [r if pool == "pretrain" else r.get("external", {}) for r in runs]
                diffs = [s[k]["diffs"] for s in src if k in s]
                cells.append(_margin_cell(pooled_margin(diffs)) if len(diffs) == len(runs) else "—")
        out.append(
            f"| **pooled: {len(runs)} runs, {epochs} epochs** (two-level bootstrap) | {t} | " + " | ".join(cells) + " |"
        )
    return out


def report(results: Path) -> str:
    """The tables of docs/learning.md from the result JSONs under ``results`` (missing ones are skipped)."""
    load = lambda name: json.loads((results / name).read_text()) if (results / name).exists() else None  # noqa: E731
    out = ["## Cause 1: the head (300 training identities, 64 held-out, tiny preset, 64 px, tubelet 2)", "",
           "Held-out AUC (REAL vs each type's fakes, external identities).", "", _HEADER]  # fmt: skip
    frozen = load("frozen_avff_agree_t2.json")
    if frozen:
        for head, r in frozen["heads"].items():
            steps = frozen["plan"]["head_steps"]
            out.append(_row(f"{head}, random encoders frozen, head only ({steps} steps, batch 32)", r))
    for head in ("avff_concat", "avff_agree"):
        t = load(f"trained_{head}_t2.json")
        if t:
            for r in t["curve"]:
                out.append(_row(f"{head}, trained end to end, step {r['step']} (batch 16)", r))
    t1 = load("trained_avff_agree_t1.json")
    for r in t1["curve"] if t1 else []:
        out.append(_row(f"avff_agree, tubelet 1 (16 time tokens), trained end to end, step {r['step']}", r))
    out += ["", "Linear (ridge) probe of the generator's true mouth opening from the video tokens at the two mouth "
            "positions (held-out R², REAL clips):", "", "| encoder | R² |", "|---|---:|"]  # fmt: skip
    if frozen:
        out.append(f"| random init | {frozen['probe_r2']:.2f} |")
    for head in ("avff_concat", "avff_agree"):
        t = load(f"trained_{head}_t2.json")
        if t:
            out.append(f"| after stage 2 with {head} | {t['probe_r2']:.2f} |")
    sync = load("sync_avff_agree_t2.json")
    if sync:
        out += ["", "## Cause 3: stage 1 (REAL clips of the pretrain pool)", "",
                "| encoder | sync margin (95 % bootstrap) | mouth probe R² |", "|---|---|---:|"]  # fmt: skip
        for key, r in sync.items():
            if isinstance(r, dict) and "margin" in r:
                r2 = f"{r['probe_r2']:.2f}" if "probe_r2" in r else "—"
                out.append(f"| {key} | {r['margin']:.2e} [{r['lo']:.2e}, {r['hi']:.2e}] | {r2} |")
        out += ["", _HEADER]
        for key, r in sync.items():
            if isinstance(r, dict) and "heads" in r:
                for head, h in r["heads"].items():
                    out.append(_row(f"{head} on frozen {key} features", h))
        for r in sync.get("stage 2 from stage 1", []):
            out.append(_row(f"avff_agree end to end from stage 1, step {r['step']}", r))
    margins = [load(f.name) for f in sorted(results.glob("margin-*.json"))]
    if margins:
        out += _margin_table(margins)
    ids = sorted(results.glob("ids_avff_agree_t2_ids*.json"))
    if ids:
        out += ["", "## Cause 2: identities (avff_agree, trained end to end)", "", _HEADER]
        for f in ids:
            for n, rows in load(f.name).items():
                if n.isdigit():
                    for r in rows:
                        out.append(_row(f"{n} identities, step {r['step']}", r))
        t = load("trained_avff_agree_t2.json")
        for r in t["curve"] if t else []:
            out.append(_row(f"{t['plan']['ids']} identities, step {r['step']} (cause 1's run)", r))
    unseen = sorted(results.glob("unseen-*_avff_agree_t2.json"))
    if unseen:
        out += ["", "## Unseen types (avff_agree, trained end to end, 300 identities; one type's fakes never in training)",
                "", _HEADER]  # fmt: skip
        for f in unseen:
            for r in load(f.name)["curve"]:
                out.append(_row(f"without {f.name.split('_avff')[0][len('unseen-') :]}, step {r['step']}", r))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="*", default=["frozen", "trained", "sync", "ids"],
                    help="frozen, trained, sync, ids, unseen:<type> (default: the first four)")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every experiment")
    ap.add_argument("--head", default="avff_agree", help="stage-2 head of trained / sync / ids")
    ap.add_argument("--tubelet", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/learning", help="generated clips are cached here")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results" / "learning"),
                    help="one JSON per experiment lands here (kept in the repository: --report rebuilds the tables "
                         "from them)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, help="override the plan's stage-2 steps")
    ap.add_argument("--ids-curve", help="override the plan's identity counts, e.g. 13,50")
    ap.add_argument("--report", help="write the tables of every result found to this markdown file and exit")
    ap.add_argument("--force", action="store_true", help="with --report: write even if rows of the file would go")
    args = ap.parse_args(argv)
    if args.report:  # the tables go between the markers; the prose around them is kept
        path, tables = Path(args.report), f"{BEGIN}\n{report(Path(args.results))}{END}"
        text = path.read_text() if path.exists() else f"# Learning (issue 22)\n\n{BEGIN}\n{END}\n"
        head, rest = text.split(BEGIN, 1)
        rows = lambda t: sum(line.startswith("| ") for line in t.splitlines())  # noqa: E731
        if rows(tables) < rows(rest.split(END, 1)[0]) and not args.force:
            raise SystemExit(f"--report: {path}'s tables have {rows(rest.split(END, 1)[0])} rows, the JSONs in "
                             f"{args.results} give {rows(tables)}: rerun the missing experiments there, or --force")  # fmt: skip
        path.write_text(head + tables + rest.split(END, 1)[1])
        return
    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else Plan()
    if args.steps:
        plan = replace(plan, steps=args.steps, evals=tuple(e for e in plan.evals if e < args.steps))
    if args.ids_curve:
        plan = replace(plan, ids_curve=tuple(int(n) for n in args.ids_curve.split(",")))
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    for exp in args.experiments:
        t0 = time.time()
        res = {"plan": dict(vars(plan)), "head": args.head, "tubelet": args.tubelet,
               **run(exp, plan, args.cache, args.head, args.tubelet)}  # fmt: skip
        res["seconds"] = round(time.time() - t0)
        tag = "_quick" if args.quick else f"_ids{'-'.join(map(str, plan.ids_curve))}" if exp == "ids" else ""
        stage1 = Path(exp[7:]).resolve()  # .../<results>/seedN/pretrain: named by both
        stem = (
            f"margin-{stage1.parents[1].name}-{stage1.parent.name}"
            if exp.startswith("margin:")
            else exp.replace(":", "-")
        )
        name = f"{stem}_{args.head}_t{args.tubelet}{tag}.json"
        (out / name).write_text(json.dumps(res, indent=1))
        print("wrote", out / name, flush=True)


if __name__ == "__main__":
    main()
