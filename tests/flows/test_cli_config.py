"""One config, many faces: every TrainSettings field is a flag, a YAML key and a Prefect parameter, with one default."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.cli import train as cli_train
from flows.cli.train import TRAIN_FLAGS, add_train_arguments, train_config
from tasks.train.settings import TrainSettings

FIELDS, flag_of = TrainSettings.model_fields, TRAIN_FLAGS.flag_of

# a value other than the default for EVERY field (a new field must join: the first test says so)
NOT_DEFAULT = {
    "output_dir": "runs/a", "resume_from": "runs/old", "pretrained_encoders": "enc.safetensors", "extra_train_data": ["more/a", "more/b"], "exclude_manipulations": ["face_blend"],
    "model_preset": "laptop", "overrides": {"num_slices": 2, "patch_size": 8}, "fusion": "late", "dropout": 0.1,
    "stages": "classify", "pretrain_epochs": 2, "epochs": 4, "batch_size": 16, "eval_batch_size": 32, "lr": 0.003,
    "pretrain_lr": 0.001, "optimizer": "lion", "scheduler": "cosine_warm_restarts", "warmup": 5, "cycle_epochs": 2,
    "cycle_mult": 2.0, "weight_decay": 0.1, "grad_clip": 0.5, "precision": "fp32", "monitor": "val_video_auc",
    "monitor_mode": "max", "patience": 7, "min_delta": 0.01, "threshold_criterion": "eer", "calibrate": False, "readout": "end_to_end", "seed": 3,
    "num_workers": 0, "samples_per_epoch": 64, "shuffle_buffer": 16, "device": "cpu", "world_size": 2,
    "ray_address": "auto", "fold": 1, "video_augment": "strong", "audio_augment": {"pitch_shift": 1.0},
    "mix": {"mixup_alpha": 0.2, "prob": 0.5}, "pseudo_fakes": {"p": 0.5, "kinds": ["audio_shift"]},
    "encoder_lr_scale": 0.5, "loss": "focal", "focal_gamma": 1.0, "class_weight": "prior",
    "label_smoothing": 0.1, "aux_weight": 0.3, "contrastive_weight": 0.05, "branch_weight": 0.5, "branch_supervision": "seen", "curriculum_epochs": 2,
    "curriculum_start": 0.25, "progressive_epochs": 3, "progressive_start": 0.75, "log_every": 10,
    "log_checkpoints": False, "report_bootstrap": 50, "experiment": "exp", "tracking_uri": "sqlite:///m.db",
    "registered_model": "m", "register_if": "never", "min_improvement": 0.02,
}  # fmt: skip


@pytest.fixture
def shards(tmp_path, monkeypatch) -> str:
    """A folder that passes --data's parse-time check (it holds a manifest); nothing reads it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.parquet").touch()
    return "shards"


def _parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avff train")
    add_train_arguments(p, **kw)
    return p


def _flags(values: dict) -> list[str]:
    """The command line that says what ``values`` says: one flag per field, as a user would type it."""
    out: list[str] = []
    for name, v in values.items():
        if isinstance(v, bool):
            out.append(flag_of(name) if v else "--no-" + flag_of(name).removeprefix("--"))
        elif name == "overrides":
            out += [a for k, x in v.items() for a in ("--override", f"{k}={json.dumps(x)}")]
        elif isinstance(v, list):  # a tuple[str, ...] field: its values after one flag
            out += [flag_of(name), *map(str, v)]
        else:
            out += [flag_of(name), json.dumps(v) if isinstance(v, dict) else str(v)]
    return out


def test_every_field_has_a_value_here_other_than_its_default():
    assert set(NOT_DEFAULT) | {"data"} == set(FIELDS)
    config = TrainSettings(data="d", **NOT_DEFAULT)
    default = TrainSettings(data="d", output_dir="o")
    assert [n for n in FIELDS if n != "data" and getattr(config, n) == getattr(default, n)] == []


def test_every_field_is_a_flag_and_a_yaml_key_and_both_say_the_same(shards, tmp_path):
    from_flags = train_config(_parser().parse_args(["--data", shards, *_flags(NOT_DEFAULT)]))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": shards, **{FIELDS[k].alias or k: v for k, v in NOT_DEFAULT.items()}}))
    from_yaml = train_config(_parser().parse_args(["--config", str(path)]))
    assert from_flags == from_yaml == TrainSettings(data=shards, **NOT_DEFAULT)


def test_a_json_file_works_too_and_flags_override_the_file(shards, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data": shards, "output_dir": "o", "epochs": 2, "mix": {"prob": 0.5},
                                "overrides": {"num_slices": 2}, "video_augment": "light"}))  # fmt: skip
    args = _parser().parse_args(["--config", str(path), "--epochs", "5", "--mixup-alpha", "0.2", "--override",
                                 "dropout=0.1", "--video-augment", '{"rotate": 1.0}'])  # fmt: skip
    config = train_config(args)
    assert config.epochs == 5 and (config.mix.prob, config.mix.mixup_alpha) == (0.5, 0.2)
    assert config.overrides == {"num_slices": 2, "dropout": 0.1}  # mappings merge, the flag's key wins
    assert config.video_augment.hflip == 0.5 and config.video_augment.rotate == 1.0  # JSON merged onto the preset


def test_cli_defaults_are_the_model_defaults(shards):
    assert train_config(_parser().parse_args(["--data", shards, "--out", "o"])) == TrainSettings(
        data=shards, output_dir="o"
    )
    helps = {a.dest: a.help for a in _parser()._actions}
    for name, info in FIELDS.items():
        if not info.is_required() and not dataclasses.is_dataclass(info.annotation):  # those: "off"
            default = info.get_default(call_default_factory=True)
            shown = json.dumps(default) if isinstance(default, dict) else str(default)
            assert f"(default: {shown})" in helps[name], name


def test_every_field_is_a_parameter_of_the_deployed_flow():
    from flows.train import train_avff

    schema = train_avff.parameters.model_dump()  # what a deployment registers and the UI renders
    properties = schema["definitions"][schema["properties"]["config"]["$ref"].rsplit("/", 1)[-1]]["properties"]
    assert set(properties) == {info.alias or name for name, info in FIELDS.items()}
    assert all(p.get("description") for p in properties.values())  # the form's help


def test_an_unknown_key_in_the_file_is_one_line_naming_it_before_anything_imports(shards, tmp_path):
    (tmp_path / "run.yaml").write_text("data: shards\noutput_dir: o\nmonitr: val_video_auc\n")
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", "--config", str(tmp_path / "run.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(cli_train.__file__).parents[2],
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"avff train: error: argument --config: {tmp_path / 'run.yaml'}: unknown key 'monitr' "
                          "(did you mean 'monitor'?)\n")  # fmt: skip


def test_a_missing_required_field_names_its_flag(shards, capsys):
    status = cli_train.checked_train_config(_parser().parse_args(["--data", shards]), "train")[1]
    assert status == 2 and capsys.readouterr().err == "avff train: error: --out: Field required\n"


# ---------------------------------------------------------------- ingest: the same faces for IngestSettings

INGEST_NOT_DEFAULT = {
    "out": "/tmp/avff-shards", "identities": "/tmp/ids.csv", "ratios": [0.6, 0.2, 0.2], "folds": 3, "seed": 1,
    "videos_per_shard": 8, "jpeg_quality": 80, "executor": "local", "ray_address": "auto", "num_workers": 2,
    "retries": 0, "progress": False,
    "preprocess": {
        "face_size": 64, "frames_per_clip": 8, "clip_fps": 4.0, "clip_mode": "native", "crop": "landmarks",
        "lip_track": True, "max_clips": 2, "clip_offset_s": 0.5, "clip_stride_s": 1.6, "face_margin": 1.5,
        "min_landmark_frac": 0.6, "mesh_roi": "detect", "min_face_frac": 0.3, "max_faces": 2, "min_track_frac": 0.4, "smooth_window": 3,
        "detect_side": 320, "min_det_score": 0.6, "sample_rate": 22050, "n_mels": 64, "win_ms": 20.0, "hop_ms": 5.0,
        "require_audio": False, "min_audio_rms": 0.001, "skip_nonref": False, "hwaccel": "cuda",
        "max_frame_error_s": 0.5,
        "limits": {"max_duration_s": 60.0, "max_bytes": 1000, "max_pixels": 1000, "read_seconds": 10.0},
    },
}  # fmt: skip


def _at(values: dict, dest: str):
    """``values``' entry at a dotted place (``preprocess.limits.max_bytes``)."""
    for key in dest.split("."):
        values = values[key]
    return values


def test_every_ingest_field_is_a_flag_a_yaml_key_and_a_parameter(tmp_path):
    from flows.cli.ingest import ingest_flags
    from flows.ingest import ingest_dfdc
    from tasks.ingest.settings import IngestSettings, preprocessing_places

    flags = ingest_flags()
    fields = IngestSettings.model_fields
    assert set(INGEST_NOT_DEFAULT) | {"data"} == set(fields)
    # every preprocessing field, nested ones included, is a flat flag of its own name
    assert set(flags.flags) == (set(fields) - {"preprocess"}) | set(preprocessing_places().values())

    def parse(argv):
        p = argparse.ArgumentParser(prog="avff ingest")
        flags.add_arguments(p, "ingest settings")
        return IngestSettings.model_validate(flags.values(p.parse_args(argv)))

    argv = ["--data", "/tmp/dfdc"]
    for dest in flags.flags:
        if dest == "data":
            continue
        flag, v = flags.flag_of(dest), _at(INGEST_NOT_DEFAULT, dest)
        argv += ([flag if v else "--no-" + flag[2:]] if isinstance(v, bool) else
                 [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)])  # fmt: skip
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump({"data": "/tmp/dfdc", **INGEST_NOT_DEFAULT}))
    from_flags, from_yaml = parse(argv), parse(["--config", str(tmp_path / "ingest.yaml")])
    assert from_flags == from_yaml == IngestSettings(data="/tmp/dfdc", **INGEST_NOT_DEFAULT)
    default = IngestSettings(data="/tmp/dfdc", out="/tmp/o").model_dump()
    assert [d for d in flags.flags if d != "data" and _at(from_flags.model_dump(), d) == _at(default, d)] == []
    assert parse(["--data", "/tmp/dfdc", "--out", "/tmp/o"]).model_dump() == default  # no defaults of its own
    # a flag over a file's group: merged into it, the file's other values kept
    (tmp_path / "part.yaml").write_text(yaml.safe_dump({"data": "/tmp/dfdc", "out": "/tmp/o",
                                                        "preprocess": {"face_size": 64, "limits": {"max_bytes": 9}}}))  # fmt: skip
    merged = parse(["--config", str(tmp_path / "part.yaml"), "--read-seconds", "7", "--max-clips", "2"]).preprocess
    assert (merged.face_size, merged.max_clips, merged.limits.max_bytes, merged.limits.read_seconds) == (64, 2, 9, 7.0)
    # the Prefect form: every field described, the preprocessing as a nested group of described fields
    schema = ingest_dfdc.parameters.model_dump()
    definitions = schema["definitions"]
    properties = definitions[schema["properties"]["config"]["$ref"].rsplit("/", 1)[-1]]["properties"]
    assert set(properties) == set(fields) and all(p.get("description") for p in properties.values())
    for group in ("PreprocessConfig", "Limits"):
        assert all(p.get("description") for p in definitions[group]["properties"].values()), group


def test_an_ingest_file_with_a_misspelt_nested_key_is_refused_while_parsing(tmp_path, capsys):
    from flows.cli.ingest import ingest_flags

    (tmp_path / "ingest.yaml").write_text("preprocess: {face_sise: 64}")
    p = argparse.ArgumentParser(prog="avff ingest")
    ingest_flags().add_arguments(p, "ingest settings")
    with pytest.raises(SystemExit):
        p.parse_args(["--config", str(tmp_path / "ingest.yaml")])
    assert "unknown key 'preprocess.face_sise' (did you mean 'preprocess.face_size'?)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "place"),
    [("face_size: 64", "preprocess.face_size"), ("max_bytes: 64", "preprocess.limits.max_bytes")],
)
def test_an_ingest_file_with_a_flat_preprocessing_key_is_refused_by_the_settings_naming_its_place(
    tmp_path, capsys, monkeypatch, text, place
):
    """The file reader keeps the key; IngestSettings refuses it, as it does for the flow's parameter and the form."""
    from flows.cli import main

    for name, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
                        "true"), ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")):  # fmt: skip
        monkeypatch.setenv(name, value)  # main sets them with setdefault: restored after the test
    (tmp_path / "ingest.yaml").write_text(f"data: {tmp_path / 'in'}\nout: {tmp_path / 'out'}\n{text}\n")
    assert main(["ingest", "--config", str(tmp_path / "ingest.yaml")]) == 2
    key = text.split(":")[0]
    assert capsys.readouterr().err.splitlines() == [
        f"avff ingest: error: {key} is a preprocessing setting: give it as {place} (YAML: under preprocess:)"
    ]


def test_an_ingest_value_refused_inside_the_group_names_its_flag(capsys):
    from pydantic import ValidationError

    from flows.cli.ingest import ingest_flags
    from tasks.ingest.settings import IngestSettings

    for pre in ({"face_size": 8, "limits": {"max_bytes": 0}}, {"lip_track": True}):
        with pytest.raises(ValidationError) as e:
            IngestSettings(data="/tmp/dfdc", out="/tmp/o", preprocess=pre)
        assert ingest_flags().usage_error("ingest", e.value) == 2
    assert capsys.readouterr().err.splitlines() == [
        "avff ingest: error: --face-size: Input should be greater than or equal to 32; "
        "--max-bytes: Input should be greater than 0",
        "avff ingest: error: lip_track needs crop=landmarks (the lips are found by the face mesh)",
    ]


# avff cv / ablate: a value other than the default for every field of CVConfig / AblationConfig but the
# training run they repeat (that one is the avff train flags; a new field must join)
EXPERIMENT_NOT_DEFAULT = {
    "cv": {"folds": [1, 2], "max_parallel": 3, "log_checkpoints": True},
    "ablate": {"variants": {"focal": {"loss": "focal"}, "base": {}}, "seeds": [4, 5], "split": "test",
               "level": "clip", "max_parallel": 2, "log_checkpoints": True},
}  # fmt: skip


def _experiment(command: str):
    """(config model, its flags, flags -> config, the field of the training run) of ``avff cv`` / ``ablate``."""
    from flows.cli import experiments as cli
    from tasks.train.experiment_settings import AblationConfig, CVConfig

    if command == "cv":
        return CVConfig, cli.CV_FLAGS, cli.cv_config, "train"
    return AblationConfig, cli.ABLATION_FLAGS, cli.ablation_config, "base"


def _parse_experiment(command: str, argv: list[str]) -> argparse.Namespace:
    from flows.cli import experiments as cli

    parser = argparse.ArgumentParser(prog="avff")
    cli.COMMANDS[command][0](parser.add_subparsers(dest="command"))
    return parser.parse_args([command, *argv])


@pytest.mark.parametrize("command", sorted(EXPERIMENT_NOT_DEFAULT))
def test_every_cv_and_ablation_field_is_a_flag_with_the_models_default(shards, command):
    model, flags, build, run = _experiment(command)
    values = EXPERIMENT_NOT_DEFAULT[command]
    assert set(values) | {run} == set(model.model_fields)
    argv = ["--data", shards, "--out", "o"]
    for name, v in values.items():
        flag = flags.flag_of(name)
        argv += ([flag] if v is True else [a for k, x in v.items() for a in (flag, f"{k}={json.dumps(x)}")]
                 if isinstance(v, dict) else [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)])  # fmt: skip
    train = TrainSettings(data=shards, output_dir="o")
    config = build(_parse_experiment(command, argv), train)
    assert config == model(**{run: train}, **values)  # logs checkpoints, as its training run (the default) does
    required = {"variants": values["variants"]} if command == "ablate" else {}
    default = model(**{run: train.replace(log_checkpoints=False)}, **required)  # the run logs as the experiment
    assert [n for n in values if n not in required and getattr(config, n) == getattr(default, n)] == []
    # the CLI has no defaults of its own: without the flags, the model's
    plain = ["--data", shards, "--out", "o", *(["--variant", 'focal={"loss": "focal"}', "--variant", "base={}"]
                                               if required else [])]  # fmt: skip
    assert build(_parse_experiment(command, plain), train) == default


def test_variant_flags_add_to_the_variants_file(shards, tmp_path):
    (tmp_path / "variants.json").write_text(json.dumps({"focal": {"loss": "focal"}, "late": {"fusion": "late"}}))
    args = _parse_experiment("ablate", ["--data", shards, "--out", "o", "--variants-file", "variants.json",
                                        "--variant", 'focal={"focal_gamma": 1.0}'])  # fmt: skip
    config = _experiment("ablate")[2](args, TrainSettings(data=shards, output_dir="o"))
    assert config.variants == {"focal": {"focal_gamma": 1.0}, "late": {"fusion": "late"}}


@pytest.mark.parametrize("text", ["short={epochs: 1}", "no-equals-sign"])
def test_a_variant_that_is_not_name_equals_json_is_refused_while_parsing(shards, capsys, text):
    with pytest.raises(SystemExit) as e:
        _parse_experiment("ablate", ["--data", shards, "--out", "o", "--variant", text])
    err = capsys.readouterr().err
    assert (
        e.value.code == 2 and err.startswith("avff ablate: error: argument --variant: ") and len(err.splitlines()) == 1
    )


def test_every_cv_and_ablation_field_is_a_parameter_of_its_flow():
    from flows.experiments import ablate_avff, cv_avff

    for command, flow in (("cv", cv_avff), ("ablate", ablate_avff)):
        schema = flow.parameters.model_dump()
        definition = schema["properties"]["config"]["$ref"].rsplit("/", 1)[-1]
        properties = schema["definitions"][definition]["properties"]
        assert set(properties) == set(_experiment(command)[0].model_fields)
        assert all(p.get("description") for p in properties.values()), command  # the form's help, the flags' help
