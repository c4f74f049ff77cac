"""Scoring a trained AVFF: from safetensors weights + config JSON, never from a pickle.

- :class:`Scorer`      a model in eval mode that turns (video, audio) into P(FAKE)
- :func:`load_model`   a Scorer from a checkpoint dir, a training output dir (its best
                        checkpoint, as registered), a ``.safetensors`` file, a pyfunc model
                        dir, or an MLflow ``models:/`` / ``runs:/`` URI (artifacts only: no code
                        from the registry runs here)
- :func:`log_pyfunc_model`  logs :class:`tasks.serve.pyfunc_model.AVFFPyfunc` as "models from code":
                        its artifacts are the weights and the config JSON, so loading it unpickles nothing

P(FAKE) is sigmoid(a·logit + b), the Platt slope a and intercept b fitted on val at the end of
training and stored with the threshold in ``decision.json`` (:mod:`storage.decision`): beside
the best checkpoint's weights, and as the pyfunc's ``decision`` artifact. Without one, a = 1, b = 0.

Inputs follow the loader contract (:mod:`tasks.train.data`): video (B, 3, T, H, W) and audio
(B, 1, F, Tm) float32, already normalised.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch

from avff_model import AVFF, AVFFConfig
from avff_model.readout import Readout
from storage import fs
from storage.decision import Decision, read_decision, read_preprocess, write_decision, write_preprocess
from storage.checkpoint import WEIGHTS, CheckpointError, load_weights, resolve_checkpoint

WEIGHTS_ARTIFACT = "weights"
CONFIG_ARTIFACT = "config"
PREPROCESS_ARTIFACT = "preprocess"  # the ingest PreprocessConfig the model was trained on
DECISION_ARTIFACT = "decision"  # storage.decision.Decision: the calibration and P(FAKE) >= t is a FAKE verdict
CONFIG_FILE = "model_config.json"
# the models-from-code entry point MLflow executes at load time; written at log time so that
# no importable module of ours has the side effect of calling set_model
_ENTRY = "import mlflow\nfrom tasks.serve.pyfunc_model import AVFFPyfunc\n\nmlflow.models.set_model(AVFFPyfunc())\n"
_PACKAGES = ("avff_model", "storage", "tasks")
# what the pyfunc runs: the model and ingest's preprocessing (decode, face detection, audio)
_REQUIREMENTS = ("torch", "numpy", "safetensors", "mlflow", "mediapipe", "av", "ffmpeg-python", "imageio-ffmpeg",
                 "scipy", "pillow", "fsspec", "pyarrow", "webdataset")  # fmt: skip


# Upper bounds of a model config we agree to build: the paper preset is ViT-B (768 wide, 12
# deep); these leave room for larger variants but refuse a tiny file asking for a 13 GB model.
CONFIG_BOUNDS: dict[str, float] = {
    "img_size": 1024, "num_frames": 128, "tubelet": 16, "patch": 64, "n_mels": 512, "mel_frames": 4096,
    "audio_patch": 64, "video_width": 4096, "video_depth": 48, "video_heads": 64, "audio_width": 4096,
    "audio_depth": 48, "audio_heads": 64, "mlp_ratio": 8.0, "decoder_width": 4096, "decoder_depth": 48,
    "decoder_heads": 64, "num_slices": 128, "contrastive_dim": 4096, "disc_hidden": 4096, "head_hidden": 4096,
    "head_heads": 64,
}  # fmt: skip


def checked_config(config: dict, weights: dict[str, torch.Tensor]) -> AVFFConfig:
    """The AVFFConfig of a checkpoint, checked against bounds and against its tensors' shapes.

    The shapes come from the model built on the ``meta`` device (no memory), so a config that
    disagrees with its weights is refused before a real parameter is allocated.
    """
    known = {f.name for f in dataclasses.fields(AVFFConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CheckpointError(f"model config has unknown fields {unknown}")
    for name, bound in CONFIG_BOUNDS.items():
        value = config.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= bound:
            raise CheckpointError(f"model config {name}={value!r} is outside (0, {bound:g}]: refused before building")
    try:
        cfg = AVFFConfig(**config)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in AVFF(cfg).state_dict().items()}
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"invalid model config: {e}") from e
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise CheckpointError(
            f"weights do not match their model config: {len(missing)} missing, {len(extra)} unexpected, "
            f"{len(wrong)} of another shape"
            + (f" (e.g. {wrong[0]}: {got[wrong[0]]} vs {expected[wrong[0]]})" if wrong else "")
        )
    return cfg


class Scorer:
    """P(FAKE) of clips, in batches, on one device."""

    def __init__(self, model: AVFF, device: str | torch.device = "cpu", preprocess: dict | None = None,
                 decision: Decision | None = None):  # fmt: skip
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.cfg
        self.preprocess = preprocess  # ingest's PreprocessConfig as a dict, when the model carries it
        self.threshold: float | None = None  # the decision threshold chosen on val, when the model carries it
        self.slope, self.intercept = 1.0, 0.0  # P(FAKE) = sigmoid(slope * logit + intercept), fitted on val
        self.decision: Decision | None = None  # where threshold and calibration came from; None: the defaults
        if decision is not None:
            self.use_decision(decision)

    def use_decision(self, decision: Decision) -> None:
        """Score with ``decision``'s calibration and give verdicts at its threshold."""
        self.threshold, self.slope, self.intercept = decision.threshold, decision.slope, decision.intercept
        self.model.set_readout(Readout.from_json(decision.readout) if decision.readout is not None else None)
        self.decision = decision

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor], config: dict, device: str = "auto") -> Scorer:
        """The model ``config`` describes, holding ``weights``; refused (CheckpointError) before
        anything is allocated when the config is out of bounds or does not match the tensors."""
        cfg = checked_config(config, weights)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AVFF(cfg)
        model.load_state_dict(weights)
        return cls(model, device)

    @torch.inference_mode()
    def predict_proba(self, video, audio, batch_size: int = 16, mouth=None, lips=None) -> np.ndarray:
        """video (B, 3, T, H, W), audio (B, 1, F, Tm) (numpy or torch) -> (B,) float32 calibrated
        P(FAKE) = sigmoid(slope * logit + intercept). ``mouth`` (B, 4): each clip's mouth box as
        fractions; None: the crop template's. ``lips`` (B, T, 2): each frame's mouth opening and width, or
        (B, K, 2) a clip's 25 fps lip track (ingest's ``lip_track``); None: none. ``tasks.serve.predict.model_inputs`` makes all four from decoded clips: ``predict_proba(**inputs)``."""
        video, audio = (
            torch.as_tensor(np.asarray(video), dtype=torch.float32),
            torch.as_tensor(np.asarray(audio), dtype=torch.float32),
        )
        cfg = self.config
        want_v, want_a = (3, cfg.num_frames, cfg.img_size, cfg.img_size), (1, cfg.n_mels, cfg.mel_frames)
        if tuple(video.shape[1:]) != want_v or tuple(audio.shape[1:]) != want_a or len(video) != len(audio):
            raise ValueError(f"expected video (B, {want_v}) and audio (B, {want_a}), got "
                             f"{tuple(video.shape)} and {tuple(audio.shape)}")  # fmt: skip
        if mouth is not None:
            mouth = torch.as_tensor(np.asarray(mouth), dtype=torch.float32)
            if tuple(mouth.shape) != (len(video), 4):
                raise ValueError(f"expected mouth ({len(video)}, 4), got {tuple(mouth.shape)}")
        if lips is not None:
            lips = torch.as_tensor(np.asarray(lips), dtype=torch.float32)
            if lips.ndim != 3 or lips.shape[0] != len(video) or lips.shape[2] != 2 or lips.shape[1] < 2:
                raise ValueError(f"expected lips ({len(video)}, T, 2): per frame (T = {cfg.num_frames}) or a lip "
                                 f"track (T = its 25 fps steps), got {tuple(lips.shape)}")  # fmt: skip
        out = []
        for i in range(0, len(video), batch_size):
            m = mouth[i : i + batch_size].to(self.device) if mouth is not None else None
            lp = lips[i : i + batch_size].to(self.device) if lips is not None else None
            logits = self.model(video[i : i + batch_size].to(self.device), audio[i : i + batch_size].to(self.device),
                                m, lp)  # fmt: skip
            out.append(torch.sigmoid(logits.float() * self.slope + self.intercept).cpu())  # (b,)
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


def _from_model_dir(path: Path, device: str) -> Scorer:
    """A pyfunc model directory as logged by :func:`log_pyfunc_model` (its artifacts/ only)."""
    weights = sorted(path.glob("artifacts/*.safetensors"))
    if len(weights) != 1:
        raise FileNotFoundError(f"{path}: expected one artifacts/*.safetensors, found {len(weights)}")
    state, meta_config, _ = load_weights(str(weights[0]))
    config_file = path / "artifacts" / CONFIG_FILE
    config = json.loads(config_file.read_text()) if config_file.exists() else meta_config
    scorer = Scorer.from_weights(state, config, device)
    scorer.preprocess = read_preprocess(str(path / "artifacts"))
    decision = read_decision(str(path / "artifacts"))
    if decision is not None:
        scorer.use_decision(decision)
    return scorer


def _weights_dir(uri: str) -> str:
    """The checkpoint directory ``uri`` names: a ``.safetensors`` file's folder, a checkpoint
    directory, a ``{tag}.json`` pointer, or a training output directory's BEST checkpoint (the
    one train registers and writes ``decision.json`` beside; resuming reads its last one)."""
    if uri.endswith(".safetensors"):
        return uri.rstrip("/").rsplit("/", 1)[0] if "/" in uri else "."
    if fs.exists(fs.join(uri, WEIGHTS)):
        return uri
    best = fs.join(uri, "checkpoints", "best.json")
    return resolve_checkpoint(best if fs.exists(best) else uri)


def load_model(uri_or_path: str, device: str = "auto") -> Scorer:
    """A Scorer from weights (see the module docstring for what ``uri_or_path`` may be)."""
    uri = str(uri_or_path)
    if uri.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            return _from_model_dir(local, device)
    local = Path(uri.removeprefix("file://"))
    if "://" not in uri.removeprefix("file://") and (local / "MLmodel").exists():
        return _from_model_dir(local, device)
    directory = _weights_dir(uri)
    state, config, _ = load_weights(uri if uri.endswith(".safetensors") else directory)
    if not config:
        raise ValueError(f"{uri}: the weights carry no model config metadata")
    scorer = Scorer.from_weights(state, config, device)
    decision = read_decision(directory)  # beside a training run's best checkpoint
    if decision is not None:
        scorer.use_decision(decision)
    scorer.preprocess = read_preprocess(directory)  # the ingest's preprocessing, written beside it
    return scorer


def video_signature() -> mlflow.models.ModelSignature:
    """The pyfunc's input: per row a ``path`` (a video file the server can read) or ``video`` (the
    file's bytes; base64 in a JSON request) with an optional ``name``. The output is a record per
    video (:class:`tasks.serve.pyfunc_model.AVFFPyfunc`), left unchecked."""
    from mlflow.types import ColSpec, Schema

    return mlflow.models.ModelSignature(inputs=Schema([
        ColSpec("string", "path", required=False),
        ColSpec("binary", "video", required=False),
        ColSpec("string", "name", required=False),
    ]))  # fmt: skip


def _requirements() -> list[str]:
    """:data:`_REQUIREMENTS` pinned to this environment's versions."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in _REQUIREMENTS]


def log_pyfunc_model(
    weights_path: str,
    config: dict,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    code_root: str | None = None,
    preprocess: dict | None = None,
    decision: Decision | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log (and optionally register) the pyfunc in the active MLflow run.

    ``weights_path``: a local ``model.safetensors``. The project's packages are shipped as
    code_paths (from ``code_root``, default: this checkout) so the model loads without them
    installed. Pip requirements are pinned from this environment instead of inferred (which
    would load the model in a subprocess). No input example: the input is a video file.
    """
    root = Path(code_root) if code_root else Path(__file__).resolve().parents[2]
    Scorer.from_weights(load_weights(weights_path)[0], config, "cpu")  # refuses weights that do not fit config
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "avff_pyfunc.py"
        entry.write_text(_ENTRY)
        config_path = Path(tmp) / CONFIG_FILE
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
        artifacts = {WEIGHTS_ARTIFACT: str(weights_path), CONFIG_ARTIFACT: str(config_path)}
        if preprocess is not None:  # the one writer of each file (storage.decision), as a checkpoint holds them
            artifacts[PREPROCESS_ARTIFACT] = write_preprocess(tmp, preprocess)
        if decision is not None:
            artifacts[DECISION_ARTIFACT] = write_decision(tmp, decision)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts=artifacts,
            code_paths=[str(root / p) for p in _PACKAGES],
            signature=video_signature(),
            pip_requirements=_requirements(),
            registered_model_name=registered_model_name,
        )
