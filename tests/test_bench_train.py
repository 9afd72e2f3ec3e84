"""``gazerm bench train``: the dataset every system trains on, and one small run of all three systems.

The benchmark is not a timed test: these check that it runs and that what it compares is the same
work (pairs that fit, the same tokens), not how fast anything is.
"""

from __future__ import annotations

import json

import pytest

from gazerm.bench.train import TrainBench, gazerm_job, prepare_dataset, run_train_bench, train_token_pairs
from gazerm.errors import ConfigError


def test_only_pairs_that_fit_are_kept_and_every_system_gets_the_same_tokens(tmp_path):
    bench = TrainBench(max_length=160, steps=4, pairs_per_step=4, output_dir=str(tmp_path))
    dataset = prepare_dataset(bench, tmp_path / "data")
    pairs = train_token_pairs(gazerm_job(bench, dataset, tmp_path))
    assert len(pairs) >= bench.train_pairs
    lengths = [len(side) for pair in pairs for side in pair]
    assert max(lengths) <= 160  # nothing had to be truncated …
    assert min(lengths) < max(lengths)  # … and the pairs are real text of varying length
    written = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(written) >= len(pairs)


def test_a_data_file_gives_its_single_turn_pairs_and_its_invalid_rows_are_reported(tmp_path, capsys):
    rows = [{"prompt": f"question {i}?", "chosen": f"a good answer {i}", "rejected": "no"} for i in range(60)]
    rows.insert(5, {"prompt": "where is the chosen side?", "rejected": "here"})
    data = tmp_path / "pairs.in.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bench = TrainBench(
        data=str(data), steps=2, warmup_steps=1, pairs_per_step=1, workers=1, output_dir=str(tmp_path)
    )
    pairs = train_token_pairs(gazerm_job(bench, prepare_dataset(bench, tmp_path / "data"), tmp_path))
    assert len(pairs) >= 2
    printed = capsys.readouterr().out
    assert "1 invalid rows left out" in printed and "row 6, field 'chosen'" in printed


def test_too_few_fitting_pairs_is_a_clear_error(tmp_path):
    bench = TrainBench(max_length=20, steps=4, pairs_per_step=4, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="fit 20 tokens"):
        prepare_dataset(bench, tmp_path / "data")


def test_the_batch_must_split_over_the_workers():
    with pytest.raises(ValueError, match="split evenly"):
        TrainBench(pairs_per_step=5, workers=2)


@pytest.mark.slow
def test_bench_train_runs_all_three_systems(ray_local, tmp_path, monkeypatch, capsys):
    # gazerm's run joins this session's Ray instead of starting a second one on the host.
    monkeypatch.setenv("RAY_ADDRESS", ray_local.get_runtime_context().gcs_address)
    bench = TrainBench(steps=4, warmup_steps=1, pairs_per_step=4, output_dir=str(tmp_path))
    results = run_train_bench(bench)

    printed = capsys.readouterr().out
    assert "gazerm/trl: " in printed and "gazerm/plain: " in printed
    for system in ("gazerm", "trl", "plain"):
        run = results["runs"][system]
        assert len(run["step_times"]) == len(run["step_tokens"]) == 4, system
        assert run["step_times"] == sorted(run["step_times"]) and run["launched"] < run["step_times"][0]
        assert all(tokens > 0 for tokens in run["step_tokens"]) and run["peak_memory_gib"] > 0.1
        assert results["tokens_per_s"][system] > 0
    assert results["runs"]["gazerm"]["processes"] == 2
    # Each step trains 4 pairs = 8 sequences of this set; the systems draw different pairs, but alike.
    means = {s: sum(r["step_tokens"]) / 4 for s, r in results["runs"].items()}
    assert max(means.values()) < 1.5 * min(means.values()), means
    assert results["ratios"]["gazerm/trl"] == pytest.approx(
        results["tokens_per_s"]["gazerm"] / results["tokens_per_s"]["trl"]
    )
