"""``gazerm bench packing`` on a tiny case: every layout runs over the same skewed micro-batches."""

from __future__ import annotations

import json
from statistics import median

from typer.testing import CliRunner

from gazerm.bench.packing import LAYOUTS, LONG_SHARE, bench_packing, skewed_units
from gazerm.cli import app
from gazerm.model.config import TinyBackbone


def test_the_set_is_skewed_and_the_benchmark_reports_every_layout_against_padded():
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
    assert list(result.tokens_per_s) == list(LAYOUTS) and result.ratio("padded") == 1.0
    for layout in LAYOUTS:
        assert (
            f"  {layout}: {result.tokens_per_s[layout]:,.0f} real tokens/s, {result.ratio(layout):.2f}x"
            in (result.report())
        )


def run_file(tmp_path, rows: list[dict]):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return bench_packing(
        pairs=4,
        micro_batch_size=2,
        bucket_window=1,
        max_length=256,
        fusion="none",
        tiny=TinyBackbone(),
        data=(str(data), "generic"),
    )


def test_a_data_file_s_pairs_run_with_their_conversations_and_its_invalid_rows_are_named(tmp_path, capsys):
    rows = [
        {"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": "No idea."}
        for i in range(6)
    ]
    turns = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi! Ask away."}]
    alone = run_file(tmp_path, rows)
    in_conversation = run_file(
        tmp_path, [{**row, "context": turns} for row in rows[:2]] + [{"prompt": "?"}] + rows[2:]
    )
    assert alone.micro_batches == in_conversation.micro_batches == 2
    assert in_conversation.real_tokens > alone.real_tokens  # the conversation is in the model's input
    assert "1 invalid rows left out" in capsys.readouterr().out


def test_a_bad_fusion_is_one_line_and_exit_2():
    result = CliRunner().invoke(app, ["bench", "packing", "--fusion", "bogus", "--pairs", "2"])
    assert (
        result.exit_code == 2 and "gazerm bench packing" in result.output and "Traceback" not in result.output
    )
