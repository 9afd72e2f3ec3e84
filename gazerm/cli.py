"""The ``gazerm`` command line: one subcommand per stage of the pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from gazerm.config import ConfigError, load_config

app = typer.Typer(
    help="gazerm: train LLM reward models from gaze (implicit) and explicit human feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config field: --set rows_per_shard=100 --set gaze.backend=local"
    ),
]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command("demo-data")
def demo_data(
    output: Annotated[Path, typer.Argument(help="JSONL file to write.")],
    rows: Annotated[int, typer.Option(help="Number of preference pairs.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the synthetic readability preference set (chosen = easier to read) as generic JSONL."""
    from gazerm.data.synthetic import write_readability_preferences

    typer.echo(write_readability_preferences(output, rows, seed))


@app.command()
def prepare(
    config: Annotated[
        Path, typer.Argument(help="Prepare config YAML (sources, output_dir, gaze predictor).")
    ],
    overrides: Overrides = None,
    quarantine: Annotated[
        bool, typer.Option("--quarantine", help="Send bad rows to quarantine.jsonl instead of stopping.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if the output matches the config.")
    ] = False,
) -> None:
    """Load sources, validate, compute gaze features (Ray Data) and write split Parquet shards + manifest."""
    from gazerm.data.errors import DataError
    from gazerm.data.prepare import PrepareConfig
    from gazerm.data.prepare import prepare as run_prepare

    try:
        settings = load_config(
            PrepareConfig, config, (overrides or []) + (["on_error=quarantine"] if quarantine else [])
        )
        manifest = run_prepare(settings, force=force)
    except (ConfigError, DataError) as error:
        raise _fail(error) from error
    counts = {split: manifest.rows(split) for split in manifest.splits}
    typer.echo(f"{settings.output_dir}: {counts}, quarantined {manifest.quarantine['count']}")


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Argument(help="Training job YAML (jobs/*.yaml); omitted: the embedded quickstart.")
    ] = None,
    overrides: Overrides = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow server; default: sqlite beside output_dir.")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete output_dir first instead of resuming from its checkpoint.")
    ] = False,
) -> None:
    """Train a reward model with Ray Train + DeepSpeed; resumes from the run's latest checkpoint."""
    from gazerm.train.config import TrainJobConfig
    from gazerm.train.job import run_training

    extra = [f"tracking.tracking_uri={tracking_uri}"] if tracking_uri else []
    try:
        settings = load_config(TrainJobConfig, config if config else {}, (overrides or []) + extra)
    except ConfigError as error:
        raise _fail(error) from error
    outcome = run_training(settings, resume=not fresh)
    shown = {k: round(v, 4) for k, v in outcome.metrics.items() if k.count("/") == 1}
    typer.echo(f"final validation metrics: {shown}")
    typer.echo(f"model:      {outcome.model_dir}")
    typer.echo(f"mlflow run: {outcome.run_id} in {outcome.tracking_uri}")
    typer.echo(f"            browse with: mlflow ui --backend-store-uri {outcome.tracking_uri}")


@app.command()
def gaze(
    text: Annotated[str, typer.Argument(help="Text to predict per-word gaze features for.")],
    predictor: Annotated[str, typer.Option(help="reading_model or transformer.")] = "reading_model",
    path: Annotated[
        str | None, typer.Option(help="Checkpoint directory for the transformer predictor.")
    ] = None,
) -> None:
    """Print the five gaze features the predictor gives each word of TEXT (a quick look at the features)."""
    from gazerm.features.base import FEATURE_NAMES
    from gazerm.features.featurize import build_predictor

    result = build_predictor(predictor, path).predict([text])[0]
    typer.echo("word".ljust(20) + "".join(name.rjust(9) for name in FEATURE_NAMES))
    for (start, end), values in zip(result.spans, result.features, strict=True):
        typer.echo(text[start:end][:19].ljust(20) + "".join(f"{v:9.3f}" for v in values))


@app.command()
def bench(
    responses: Annotated[int, typer.Option(help="Responses to featurize.")] = 2000,
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
) -> None:
    """Measure gaze-feature and shard-writing throughput, as ratios against in-process baselines."""
    from gazerm.bench import run_benchmarks

    results = run_benchmarks(responses)
    if output:
        output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    app()
