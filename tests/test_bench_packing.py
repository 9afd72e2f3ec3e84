"""``gazerm bench packing`` on a tiny case: both layouts run over the same skewed micro-batches."""

from __future__ import annotations

from statistics import median

from gazerm.bench.packing import LONG_SHARE, bench_packing, skewed_units
from gazerm.model.config import TinyBackbone


def test_the_set_is_skewed_and_the_benchmark_reports_a_ratio():
    units = skewed_units(64)
    lengths = [
        len(text) for side in ("chosen_text", "rejected_text") for text in units.column(side).to_pylist()
    ]
    long = [length for length in lengths if length > 4 * median(lengths)]
    assert 0 < len(long) < 2 * LONG_SHARE * len(lengths)  # most short, a few long
    result = bench_packing(
        pairs=4, micro_batch_size=2, bucket_window=1, max_length=256, fusion="none", tiny=TinyBackbone()
    )
    assert result.micro_batches == 2 and result.real_tokens < result.padded_slots
    assert result.ratio > 0 and f"packed/padded: {result.ratio:.2f}x" in result.report()
