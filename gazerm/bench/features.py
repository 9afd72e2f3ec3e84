"""``gazerm bench features``: data-side throughput against baselines timed in the same process.

- gaze features: the default predictor of ``gazerm prepare`` on a batch of responses at once,
  against the same predictor called one response at a time (what a naive per-row ``map`` would do);
- shard writing: rows with their gaze features as zstd Parquet shards in the preference schema
  (hashed for the manifest), against writing the same rows as JSON lines (the format most
  preference data arrives in).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from gazerm.data.schema import PreferenceExample, examples_to_table, pairs_from_scores
from gazerm.data.shards import write_split
from gazerm.data.synthetic import readability_preferences

REPEATS = 3  # best of three: the least disturbed run of a shared machine


@dataclass(frozen=True)
class Result:
    """One throughput against its baseline, both in ``unit``."""

    task: str
    unit: str
    value: float
    baseline: str
    baseline_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value

    def report(self) -> str:
        return (
            f"{self.task}: {self.value:,.0f} {self.unit}\n"
            f"  baseline, {self.baseline}: {self.baseline_value:,.0f} {self.unit}\n"
            f"  ratio {self.ratio:.2f}x"
        )


def _best_seconds(work: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def _texts(count: int) -> list[str]:
    """Responses of roughly 100 words, like real assistant replies."""
    records = readability_preferences(count, seed=1)
    return [" ".join([r["chosen"], r["rejected"]] * 4) for r in records]


def bench_gaze(count: int) -> Result:
    from gazerm.data.config import GazeSpec
    from gazerm.features.featurize import build_predictor

    predictor = build_predictor(GazeSpec().predictor)
    texts = _texts(count)
    predictor.predict(texts)  # fill the per-word caches once, so both runs measure the steady state
    batched = _best_seconds(lambda: predictor.predict(texts))
    one_by_one = _best_seconds(lambda: [predictor.predict([text]) for text in texts])
    return Result(
        f"gaze features, {predictor.name}, {count:,} responses of ~100 words in one predict call",
        "responses/s",
        count / batched,
        "the same predictor called once per response",
        count / one_by_one,
    )


def bench_shards(count: int) -> Result:
    from gazerm.features.featurize import GazeFeaturizer

    examples = [
        PreferenceExample(
            "bench",
            "bench",
            i,
            r["prompt"],
            [r["chosen"], r["rejected"]],
            "pairwise",
            pairs_from_scores([1.0, 0.0]),
        )
        for i, r in enumerate(readability_preferences(count, seed=2))
    ]
    table = GazeFeaturizer()(examples_to_table(examples))  # shards as prepare writes them, gaze included
    rows = table.to_pylist()
    rows_per_shard = max(count // 8, 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parquet = _best_seconds(lambda: write_split(table, root, "train", rows_per_shard))

        def write_jsonl() -> None:
            with (root / "rows.jsonl").open("w") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in rows)

        jsonl = _best_seconds(write_jsonl)
    return Result(
        f"shard writing, {count:,} rows with gaze as zstd Parquet shards of {rows_per_shard:,} (+ sha256)",
        "rows/s",
        count / parquet,
        "the same rows written as one JSON-lines file",
        count / jsonl,
    )


def run_benchmarks(count: int) -> dict[str, dict[str, float | str]]:
    """Run both benchmarks (``count`` responses, ``5 * count`` rows), print them, return them for JSON."""
    results = {"gaze_features": bench_gaze(count), "shard_writing": bench_shards(count * 5)}
    for result in results.values():
        print(result.report())
    return {name: {**asdict(result), "ratio": result.ratio} for name, result in results.items()}
