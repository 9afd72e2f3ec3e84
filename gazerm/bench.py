"""Throughput benchmarks for ``gazerm bench``; each prints a ratio against a baseline timed in the same run.

- gaze features: the default reading model on a batch of responses at once, against the
  same predictor called one response at a time (what a naive per-row ``map`` would do);
- shard writing: zstd Parquet shards in the preference schema, against writing the same
  rows as JSON lines (the format most preference data arrives in).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gazerm.data.schema import PreferenceExample, examples_to_table, pairs_from_scores
from gazerm.data.shards import write_split
from gazerm.data.synthetic import readability_preferences


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _texts(count: int) -> list[str]:
    """Responses of roughly 100 words, like real assistant replies."""
    records = readability_preferences(count, seed=1)
    return [" ".join([r["chosen"], r["rejected"]] * 4) for r in records]


def bench_gaze(count: int) -> dict[str, float]:
    from gazerm.features.reading_model import ReadingTimeModel

    predictor = ReadingTimeModel()
    texts = _texts(count)
    predictor.predict(texts[:10])  # warm caches (word frequencies) for both runs alike
    batched = _seconds(lambda: predictor.predict(texts))
    one_by_one = _seconds(lambda: [predictor.predict([text]) for text in texts])
    return {"responses_per_s": count / batched, "baseline_responses_per_s": count / one_by_one}


def bench_shards(count: int) -> dict[str, float]:
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
    table = examples_to_table(examples)
    with tempfile.TemporaryDirectory() as tmp:
        parquet = _seconds(lambda: write_split(table, Path(tmp), "train", rows_per_shard=max(count // 8, 1)))
        rows = table.to_pylist()

        def write_jsonl() -> None:
            with (Path(tmp) / "rows.jsonl").open("w") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in rows)

        jsonl = _seconds(write_jsonl)
    return {"rows_per_s": count / parquet, "baseline_rows_per_s": count / jsonl}


def run_benchmarks(count: int) -> dict[str, dict[str, float]]:
    results = {"gaze_features": bench_gaze(count), "shard_writing": bench_shards(count * 5)}
    for name, numbers in results.items():
        value, baseline = (v for k, v in numbers.items())
        ratio = value / baseline
        print(f"{name:14s} {value:12,.0f}/s   baseline {baseline:12,.0f}/s   ratio {ratio:6.2f}x")
    return results
