"""Head-only training on a frozen backbone (``model.frozen``): in process, features cached per response,
only the heads changing, and a saved model that scores exactly as the trained heads did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from gazerm.cache import CACHE_ENV, cache_dir
from gazerm.model.config import ModelConfig
from gazerm.model.inputs import InputSpec
from gazerm.model.io import load_reward_model
from gazerm.model.reward_model import RewardModel
from gazerm.train.config import DataConfig, OptimConfig, RunConfig, TrackingConfig, TrainJobConfig
from gazerm.train.frozen import FeatureCache, FrozenTrainer, model_key
from gazerm.train.job import run_frozen_training
from gazerm.train.kinds import LossSpec
from tests.helpers import prepare_gaze_decided
from tests.train.helpers import loss_spec


@pytest.fixture(scope="module")
def gaze_decided(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("frozen-data")
    prepare_gaze_decided(root, n=160, seed=3)
    return str(root / "shards")


@pytest.fixture(autouse=True)
def feature_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def forwards(monkeypatch) -> list[int]:
    """Rows the backbone ran on, call by call."""
    calls: list[int] = []
    original = RewardModel.pooled_features

    def counted(self, input_ids, *args, **kwargs):
        calls.append(input_ids.shape[0])
        return original(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(RewardModel, "pooled_features", counted)
    return calls


def job(tmp_path: Path, tracking_uri: str, dataset: str, name: str, **model) -> TrainJobConfig:
    return TrainJobConfig(
        name=name,
        output_dir=str(tmp_path / name),
        data=DataConfig(dataset_dir=dataset, prepare=None, max_length=64),
        model=ModelConfig(frozen=True, lora=None, **model),
        optim=OptimConfig(lr=1e-2, warmup_ratio=0.0),
        run=RunConfig(num_workers=1, micro_batch_size=8, max_steps=30, eval_every=10, select="best"),
        tracking=TrackingConfig(tracking_uri=tracking_uri),
    )


def test_a_frozen_run_trains_only_the_heads_and_its_model_scores_as_trained(
    tmp_path, tracking_uri, gaze_decided
):
    config = job(tmp_path, tracking_uri, gaze_decided, "concat", fusion="concat")
    outcome = run_frozen_training(config, resume=True, parent_run_id=None)
    assert outcome.metrics["test/count"] > 0 and 0.0 <= outcome.metrics["test/accuracy"] <= 1.0
    assert outcome.metrics["selected_step"] in (10, 20, 30)
    history = MlflowClient(outcome.tracking_uri).get_metric_history(outcome.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == [10, 20, 30]

    saved, _, _ = load_reward_model(outcome.model_dir)
    inputs, loss = InputSpec.read(outcome.model_dir), LossSpec.of(config)
    fresh = FrozenTrainer(config, {}, inputs, loss)
    fresh.setup()  # the untrained model of the same seed
    initial, trained = fresh.model.state_dict(), saved.state_dict()
    changed = {name for name in initial if not torch.equal(initial[name], trained[name])}
    assert changed == {"value_head.weight"}  # projector and backbone untouched, the bias frozen at 0

    trainer = FrozenTrainer(config, {"test": _units(gaze_decided, "test")}, inputs, loss)
    trainer.setup()
    batch = trainer.batches["test"][0]
    with torch.no_grad():
        scored = saved(**batch.micro.inputs.forward_kwargs()).rewards
        from_cache = saved.head_rewards(batch.pooled)
    torch.testing.assert_close(scored, from_cache, rtol=0, atol=1e-5)


def test_without_a_final_evaluation_the_last_step_is_not_evaluated_nor_selected(
    tmp_path, tracking_uri, gaze_decided
):
    config = job(tmp_path, tracking_uri, gaze_decided, "strict", fusion="concat")
    config.run = config.run.model_copy(
        update={"max_steps": 25, "final_eval": False, "select_ties": "earlier"}
    )
    outcome = run_frozen_training(config, resume=True, parent_run_id=None)
    history = MlflowClient(outcome.tracking_uri).get_metric_history(outcome.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == [10, 20]
    values = {m.step: m.value for m in history}
    best = 20 if values[20] > values[10] else 10  # a tie keeps the earlier evaluation
    assert outcome.metrics["selected_step"] == best


def test_without_a_final_evaluation_select_last_exports_the_last_step_as_a_ray_job(
    tmp_path, tracking_uri, gaze_decided
):
    config = job(tmp_path, tracking_uri, gaze_decided, "last", fusion="concat")
    config.run = config.run.model_copy(update={"max_steps": 25, "final_eval": False, "select": "last"})
    outcome = run_frozen_training(config, resume=True, parent_run_id=None)
    history = MlflowClient(outcome.tracking_uri).get_metric_history(outcome.run_id, "val/accuracy")
    assert outcome.metrics["selected_step"] == 25
    assert outcome.metrics["val/accuracy"] == {m.step: m.value for m in history}[20]  # the last evaluation's


def test_features_are_computed_once_per_response_across_runs(tmp_path, tracking_uri, gaze_decided, forwards):
    first = job(tmp_path, tracking_uri, gaze_decided, "text-a", fusion="none")
    run_frozen_training(first, resume=True, parent_run_id=None)
    rows = sum(forwards)
    assert rows > 0
    other_order = first.model_copy(
        update={
            "name": "text-b",
            "output_dir": str(tmp_path / "text-b"),
            "run": first.run.model_copy(update={"seed": 9}),
        }
    )
    run_frozen_training(other_order, resume=True, parent_run_id=None)
    assert sum(forwards) == rows  # the second run read every vector back
    cache = FeatureCache(cache_dir("pooled"), model_key(first.model))
    assert len(cache.vectors) == rows


def test_the_cache_key_follows_what_decides_the_features():
    base = ModelConfig(frozen=True, lora=None, fusion="none", backbone="tiny-llama")
    assert model_key(base) == model_key(base.model_copy(update={"fp_dropout": (0.2, 0.2)}))
    assert model_key(base) != model_key(base.model_copy(update={"seed": 1}))  # a tiny backbone's weights
    gaze = base.model_copy(update={"fusion": "add"})
    assert model_key(gaze) != model_key(gaze.model_copy(update={"features_used": [1, 1, 1, 1, 0]}))


def test_frozen_needs_an_unchanged_backbone():
    with pytest.raises(ValueError, match=r"model\.frozen=true trains the heads"):
        ModelConfig(frozen=True)  # LoRA by default
    with pytest.raises(ValueError, match=r"implicit_features=true and fusion=none"):
        ModelConfig(text=False, fusion="none")


def _units(dataset: str, split: str):
    from gazerm.data.shards import verify
    from gazerm.train.job import _split_units

    return _split_units(verify(dataset).shard_paths(dataset, split), loss_spec())


def test_a_response_key_holds_its_gaze_only_for_a_gaze_model():
    from gazerm.model.inputs import PromptResponse, SequenceEncoder
    from gazerm.model.reward_model import build_tokenizer
    from gazerm.train.frozen import sequence_keys

    encoder = SequenceEncoder(build_tokenizer(ModelConfig()), 32)
    spans = torch.tensor([[0, 4]]).numpy()

    def keys(value: float, with_gaze: bool) -> list[str]:
        features = torch.full((1, 5), value).numpy()
        return sequence_keys(
            encoder.pad(encoder.encode([PromptResponse("Q: ", "well", spans, features)])), with_gaze
        )

    assert keys(0.1, with_gaze=False) == keys(0.9, with_gaze=False)
    assert keys(0.1, with_gaze=True) != keys(0.9, with_gaze=True)


@pytest.mark.parametrize("fusion", ["none", "add"])
def test_a_model_trained_on_a_releases_own_gaze_scores_text(tmp_path, tracking_uri, fusion):
    """``gaze.predictor: source`` (IFLLM's webcam gaze) is recorded gaze: a text-only model scores any text,
    a gaze model needs each response's fixations."""
    from gazerm.data.config import PrepareConfig
    from gazerm.score import RewardScorer
    from tests.data.ifllm_fixture import write_behaviour_decided_release

    dataset = write_behaviour_decided_release(tmp_path, workers=4, queries=4, seed=1)
    prepare = PrepareConfig(
        sources=[{"format": "ifllm", "path": str(dataset)}],
        output_dir=str(tmp_path / "data"),
        splits={"train": 0.5, "validation": 0.5},
        gaze={"predictor": "source", "backend": "local"},
    )
    config = job(tmp_path, tracking_uri, str(tmp_path / "data"), fusion, fusion=fusion)
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"dataset_dir": None, "prepare": prepare})}
    )
    outcome = run_frozen_training(config, resume=True, parent_run_id=None)
    scorer = RewardScorer(outcome.model_dir)
    assert scorer.recorded_only == (fusion != "none")
    if fusion == "none":
        (reward,) = scorer.score(["Which is better?"], ["A short answer."])
        assert np.isfinite(reward)
