"""``avff ingest``: flags generated from :class:`tasks.ingest.settings.IngestSettings` -> the ingest-dfdc flow."""

from __future__ import annotations

import json

from flows.cli.console import flow_console


def ingest_flags():
    """IngestSettings' flags: ``--field-name`` each (the preprocessing's too: ``--face-size`` sets
    ``preprocess.face_size``), ``--config FILE``, defaults and help from the fields."""
    from flows.cli.fields import ConfigFlags
    from tasks.ingest.settings import IngestSettings

    return ConfigFlags(IngestSettings, flatten=("preprocess",))


def _add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="DFDC folder -> WebDataset shards + parquet manifests",
                       description="Decode each video, crop the tracked face, extract the log-mel and write "
                       "WebDataset shards + manifest.parquet (an ingest-dfdc flow run).")  # fmt: skip
    ingest_flags().add_arguments(p, "ingest settings (tasks/ingest/settings.py, docs/ingest.md)")


def _ingest(args) -> int:
    from pydantic import ValidationError

    from flows.preflight import ConfigError, check_ingest_inputs
    from tasks.ingest.settings import IngestSettings

    flags = ingest_flags()
    try:  # before the flow's import and its run: a refused command leaves no failed run behind
        cfg = IngestSettings.model_validate(flags.values(args))
        check_ingest_inputs(cfg.data, cfg.out, cfg.identity_map)
    except (ValidationError, ConfigError) as e:
        return flags.usage_error("ingest", e)
    flow_console(args)
    from flows.ingest import ingest_dfdc

    print(json.dumps(ingest_dfdc(cfg), indent=2))
    return 0


COMMANDS = {"ingest": (_add_ingest, _ingest)}
