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
TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow server; default: sqlite beside output_dir.")
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


def _job_config(config: Path | None, overrides: list[str] | None, tracking_uri: str | None):
    """The training job config: a YAML file or the embedded quickstart, plus --set and --tracking-uri."""
    from gazerm.train.config import TrainJobConfig

    extra = [f"tracking.tracking_uri={tracking_uri}"] if tracking_uri else []
    return load_config(TrainJobConfig, config if config else {}, (overrides or []) + extra)


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Argument(help="Training job YAML (jobs/*.yaml); omitted: the embedded quickstart.")
    ] = None,
    overrides: Overrides = None,
    tracking_uri: TrackingUri = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete output_dir first instead of resuming from its checkpoint.")
    ] = False,
) -> None:
    """Train a reward model with Ray Train + DeepSpeed; resumes from the run's latest checkpoint."""
    from gazerm.train.job import run_training

    try:
        settings = _job_config(config, overrides, tracking_uri)
    except ConfigError as error:
        raise _fail(error) from error
    outcome = run_training(settings, resume=not fresh)
    shown = {k: round(v, 4) for k, v in outcome.metrics.items() if k.count("/") == 1}
    typer.echo(f"final validation metrics: {shown}")
    typer.echo(f"model:      {outcome.model_dir}")
    typer.echo(f"mlflow run: {outcome.run_id} in {outcome.tracking_uri}")
    typer.echo(f"            browse with: mlflow ui --backend-store-uri {outcome.tracking_uri}")


@app.command()
def score(
    model_dir: Annotated[
        Path, typer.Argument(metavar="MODEL_DIR", help="Reward model directory (a training run's model/).")
    ],
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="JSONL or Parquet rows with prompt, response, context.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL to write: input rows + reward.")],
    batch_size: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 16,
) -> None:
    """Score prompt/response pairs with a trained reward model, computing its gaze features on the fly."""
    from gazerm.score import score_file

    try:
        count = score_file(model_dir, input_path, output, batch_size)
    except (ValueError, OSError) as error:  # DataError is a ValueError; OSError: no such model directory
        raise _fail(error) from error
    typer.echo(f"scored {count} rows → {output}")


@app.command()
def tune(
    space: Annotated[Path, typer.Option("--space", help="Search space YAML (tune_spaces/*.yaml).")],
    config: Annotated[
        Path | None, typer.Argument(help="Training job YAML the trials start from; omitted: the quickstart.")
    ] = None,
    overrides: Overrides = None,
    tracking_uri: TrackingUri = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Replace an earlier search of this name.")] = False,
) -> None:
    """Search hyper-parameters with Ray Tune (one training job per trial); register the best model."""
    from gazerm.tune.search import run_search
    from gazerm.tune.space import SearchSpace

    try:
        settings = _job_config(config, overrides, tracking_uri)
        outcome = run_search(settings, load_config(SearchSpace, space), fresh=fresh)
    except (ConfigError, FileExistsError, RuntimeError) as error:  # RuntimeError: no trial finished
        raise _fail(error) from error
    version = outcome.model_version
    typer.echo(f"trials of {outcome.name}, best first:\n{outcome.comparison.markdown()}")
    typer.echo("feature ablation (each features_used subset at its best other params):")
    typer.echo(outcome.ablation.markdown())
    typer.echo(f"best trial: {outcome.best.name} (run {outcome.best.run_id})")
    typer.echo(f"registered: models:/{version.name}/{version.version}, alias @{', @'.join(version.aliases)}")
    typer.echo(f"browse with: mlflow ui --backend-store-uri {outcome.tracking_uri}")


select_app = typer.Typer(
    help="Compare a search's trials and promote registered model versions.", no_args_is_help=True
)
app.add_typer(select_app, name="select")

SelectTrackingUri = Annotated[
    str, typer.Option("--tracking-uri", help="MLflow store; default: the one jobs under runs/ write to.")
]


@select_app.command("list")
def select_list(
    search: Annotated[str, typer.Argument(help="Search name (e.g. quickstart-tiny) or its parent run id.")],
    tracking_uri: SelectTrackingUri = "sqlite:///runs/mlflow.db",
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the search.")] = "gazerm",
) -> None:
    """Compare a search's trials (the params that vary, val/accuracy, val/loss) and its model versions."""
    from gazerm.tune.select import search_report

    try:
        report = search_report(tracking_uri, experiment, search)
    except KeyError as error:
        raise _fail(error) from error
    typer.echo(f"trials of {search} (run {report.parent_run_id}), best first:\n{report.trials.markdown()}")
    if report.model_name:
        typer.echo(f"versions of registered model {report.model_name}:\n{report.versions.markdown()}")


@select_app.command("promote")
def select_promote(
    name: Annotated[str, typer.Argument(help="Registered model name (a search's name by default).")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to point at VERSION.")] = "champion",
    tracking_uri: SelectTrackingUri = "sqlite:///runs/mlflow.db",
) -> None:
    """Point an alias (e.g. champion) at a model version: the same move as the MLflow UI's alias editor."""
    from mlflow.exceptions import MlflowException

    from gazerm.track.registry import promote

    try:
        promoted = promote(tracking_uri, name, version, alias)
    except MlflowException as error:
        raise _fail(error) from error
    typer.echo(f"models:/{name}@{alias} → version {promoted.version} (run {promoted.run_id})")


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
