"""A model reads the same rows the same way everywhere: the training collator, the scorer (and so the
server), export's probes and the training benchmark all encode through ``InputPipeline``, and give the
same token ids, gaze slots and rewards for the same rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gazerm.bench.train import train_token_pairs
from gazerm.data.shards import Manifest
from gazerm.model.export import made_up_gaze, probe_inputs
from gazerm.model.inputs import InputSpec, ModelInputs
from gazerm.model.io import load_reward_model
from gazerm.model.pipeline import InputPipeline
from gazerm.score import RewardScorer
from gazerm.train.collate import UnitCollator
from gazerm.train.config import DataConfig, RunConfig, TrainJobConfig
from gazerm.train.job import input_spec
from gazerm.train.kinds import LossSpec
from gazerm.train.units import ToUnits
from tests.conftest import save_random_model
from tests.helpers import prepare_readability

SIDES = ("chosen", "rejected")
MAX_LENGTH = 96  # some rows are cut: truncation must agree too


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[str, Manifest]:
    """A prepared train split (reading-model gaze for prompts and responses)."""
    root = tmp_path_factory.mktemp("pipeline")
    manifest = prepare_readability(
        root, n=6, seed=2, rows_per_shard=6, splits={"train": 1.0, "validation": 0.0, "test": 0.0}
    )
    return str(root / "shards"), manifest


@pytest.fixture(scope="module", params=["gazerm", "reference"])
def model_dir(request, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp(f"model-{request.param}") / "rm"
    return save_random_model(directory, max_length=MAX_LENGTH, fusion="concat", gaze_layout=request.param)


def rows_of(inputs: ModelInputs) -> list[dict[str, torch.Tensor]]:
    """Each row's ids, gaze and gaze mask, padding dropped."""
    rows = []
    for row in range(inputs.input_ids.shape[0]):
        kept = inputs.attention_mask[row].bool()
        rows.append(
            {
                "input_ids": inputs.input_ids[row][kept],
                "gaze": inputs.gaze[row][kept],
                "gaze_mask": inputs.gaze_mask[row][kept],
            }
        )
    return rows


def assert_same_rows(got: list[dict[str, torch.Tensor]], expected: list[dict[str, torch.Tensor]]) -> None:
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine["input_ids"], theirs["input_ids"])
        assert torch.equal(mine["gaze_mask"], theirs["gaze_mask"])
        torch.testing.assert_close(mine["gaze"], theirs["gaze"], rtol=0, atol=1e-6)


class Training:
    """The training side: a job of the saved model's architecture on the dataset, one unit per
    micro-batch, and the saved model over its collator's micro-batches."""

    def __init__(self, model_dir: Path, dataset: tuple[str, Manifest]) -> None:
        self.model, self.tokenizer, model_config = load_reward_model(model_dir)
        self.model.eval()
        self.config = TrainJobConfig(
            data=DataConfig(dataset_dir=dataset[0], max_length=MAX_LENGTH, bucket_window=1),
            model=model_config,
            run=RunConfig(micro_batch_size=1),
        )
        self.manifest = dataset[1]
        self.loss = LossSpec.of(self.config)

    def micro_batches(self, units: pa.Table) -> list[ModelInputs]:
        spec = input_spec(self.config, self.manifest)
        collator = UnitCollator.for_job(self.config, spec, self.loss, self.tokenizer)
        return [micro.inputs for micro in collator.collate(units)]

    @torch.no_grad()
    def rewards(self, batches: list[ModelInputs]) -> np.ndarray:
        """(units, 2): each unit's chosen and rejected reward."""
        return np.stack([self.model(**inputs.forward_kwargs()).rewards.numpy() for inputs in batches])


def units_of(dataset: tuple[str, Manifest], trainer: Training) -> pa.Table:
    root, manifest = dataset
    rows = pa.concat_tables([pq.read_table(p) for p in manifest.shard_paths(root, "train")])
    return ToUnits(trainer.loss)(rows)


def test_training_scoring_and_the_benchmark_read_rows_alike(model_dir, dataset):
    trainer = Training(model_dir, dataset)
    units = units_of(dataset, trainer)
    batches = trainer.micro_batches(units)
    training = [row for inputs in batches for row in rows_of(inputs)]  # unit by unit: chosen, rejected
    assert len(training) == 2 * units.num_rows >= 10
    assert any(len(row["input_ids"]) == MAX_LENGTH for row in training)  # truncation is covered
    assert all(row["gaze_mask"].any() for row in training)

    scorer = RewardScorer(model_dir, batch_size=4)
    seen: list[ModelInputs] = []
    forward = scorer.model.forward

    def recording(**inputs):
        seen.append(ModelInputs(**inputs, response_mask=inputs["attention_mask"].bool()))
        return forward(**inputs)

    scorer.model.forward = recording
    table = units.to_pydict()
    scored = [scorer.score(table["prompt"], table[f"{side}_text"], table["context"]) for side in SIDES]
    flat = [row for inputs in seen for row in rows_of(inputs)]  # every chosen response, then every rejected
    assert_same_rows(
        [row for pair in zip(flat[: units.num_rows], flat[units.num_rows :], strict=True) for row in pair],
        training,
    )
    np.testing.assert_allclose(np.stack(scored, axis=1), trainer.rewards(batches), atol=1e-5)

    pairs = train_token_pairs(trainer.config)  # the tokens the benchmark's baselines train on
    assert [[list(ids) for ids in pair] for pair in pairs] == [
        [row["input_ids"].tolist() for row in training[i : i + 2]] for i in range(0, len(training), 2)
    ]


def with_gaze(units: pa.Table, column: str, gaze: list[tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """``units`` with the flattened word gaze of ``column`` (``prompt``, ``chosen``, …) replaced."""
    for name, values, kind in (
        ("spans", [spans.ravel().tolist() for spans, _ in gaze], pa.int32()),
        ("features", [features.ravel().tolist() for _, features in gaze], pa.float32()),
    ):
        field = f"{column}_{name}"
        units = units.set_column(units.schema.get_field_index(field), field, pa.array(values, pa.list_(kind)))
    return units


def test_exports_probes_read_rows_as_training_does(model_dir, dataset):
    """Export checks the exported model on probe rows with made-up gaze: the collator, given the same gaze
    in its units, builds the same inputs, and the model gives the same rewards."""
    trainer = Training(model_dir, dataset)
    units = units_of(dataset, trainer)
    table = units.to_pydict()
    assert not any(table["context"])  # probes are single-turn
    for column, texts in (("prompt", table["prompt"]), *((side, table[f"{side}_text"]) for side in SIDES)):
        units = with_gaze(units, column, [made_up_gaze(text) for text in texts])
    batches = trainer.micro_batches(units)
    training = [row for inputs in batches for row in rows_of(inputs)]

    model, tokenizer, config = load_reward_model(model_dir)
    pipeline = InputPipeline.from_spec(InputSpec.read(model_dir), tokenizer, config)  # as export_model does
    responses = zip(table["prompt"], table["chosen_text"], table["rejected_text"], strict=True)
    probes = tuple((prompt, text) for prompt, *texts in responses for text in texts)
    inputs = probe_inputs(pipeline, probes)
    assert_same_rows(rows_of(inputs), training)
    with torch.no_grad():
        probed = model.eval()(**inputs.forward_kwargs()).rewards.numpy().reshape(-1, 2)
    np.testing.assert_allclose(probed, trainer.rewards(batches), atol=1e-5)
