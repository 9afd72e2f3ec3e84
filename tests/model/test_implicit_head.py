"""The implicit-feedback head: an additive reward term from behaviour features, nothing without them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gazerm.features.implicit import N_IMPLICIT
from gazerm.model.inputs import PromptResponse, SequenceEncoder
from gazerm.model.reward_model import build_reward_model, build_tokenizer
from tests.model.conftest import make_batch, tiny_config


def test_head_adds_a_term_only_where_features_are_present(tokenizers):
    config = tiny_config(implicit_features=True)
    model = build_reward_model(config, tokenizers["tiny-llama"]).eval()
    batch = make_batch(tokenizers["tiny-llama"])
    features = torch.rand(2, N_IMPLICIT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        text_only = model(**batch).rewards
        absent = model(**batch, implicit=features, implicit_mask=torch.tensor([False, False])).rewards
        mixed = model(**batch, implicit=features, implicit_mask=torch.tensor([True, False])).rewards
        term = model.implicit_head.net(features[:1]).squeeze(-1)
    assert torch.equal(absent, text_only)
    assert mixed[1] == text_only[1]
    assert mixed[0] == pytest.approx((text_only[0] + term[0]).item(), abs=1e-6)


def test_a_text_only_model_has_no_head():
    assert build_reward_model(tiny_config(), build_tokenizer(tiny_config())).implicit_head is None


def test_encoder_pads_features_and_marks_who_has_them(tokenizers):
    encoder = SequenceEncoder(tokenizers["tiny-llama"], 32)
    values = np.arange(N_IMPLICIT, dtype=np.float32)
    empty = np.zeros(0, dtype=np.float32)
    batch = encoder.pad(
        encoder.encode(
            [PromptResponse("Q: ", "yes", empty, empty, values), PromptResponse("Q: ", "no", empty, empty)]
        )
    )
    assert batch.implicit_mask.tolist() == [True, False]
    assert batch.implicit[0].tolist() == values.tolist() and not batch.implicit[1].any()
    with pytest.raises(ValueError, match=r"different lengths \[3, 8\]"):
        encoder.pad(
            encoder.encode(
                [
                    PromptResponse("Q: ", "yes", empty, empty, values[:3]),
                    PromptResponse("Q: ", "no", empty, empty, values),
                ]
            )
        )


def test_head_sized_by_the_data_and_refusing_other_lengths(tokenizers):
    model = build_reward_model(tiny_config(implicit_features=True, implicit_dim=3), tokenizers["tiny-llama"])
    assert model.implicit_head.net[0].in_features == 3
    with pytest.raises(ValueError, match="reads 3 behaviour features per response, these rows have 8"):
        model.implicit_head(torch.ones(2, N_IMPLICIT), torch.ones(2, dtype=torch.bool))


def test_implicit_only_model_never_reads_the_text(tokenizers):
    config = tiny_config(implicit_features=True, implicit_dim=3, text=False, fusion="none")
    model = build_reward_model(config, tokenizers["tiny-llama"]).eval()
    batch = make_batch(tokenizers["tiny-llama"])
    features, present = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]]), torch.tensor([True, True])
    with torch.no_grad():
        rewards = model(**batch, implicit=features, implicit_mask=present).rewards
        scrambled = model(
            **{**batch, "input_ids": batch["input_ids"].flip(1)}, implicit=features, implicit_mask=present
        )
    assert rewards[0].item() == pytest.approx(rewards[1].item(), abs=1e-6)
    assert torch.equal(rewards, scrambled.rewards)
    empty = torch.zeros(2, 0)  # a batch in which no response has behaviour features
    with torch.no_grad():
        assert model(
            **batch, implicit=empty, implicit_mask=torch.tensor([False, False])
        ).rewards.tolist() == [0, 0]


def test_head_round_trips_through_save_and_load(tmp_path, tokenizers):
    from gazerm.model.io import load_reward_model, save_reward_model
    from tests.helpers import TEXT_ONLY_INPUTS
    from tests.model.test_io import trained_looking

    config = tiny_config(implicit_features=True)
    model = trained_looking(config, tokenizers["tiny-llama"])
    save_reward_model(model, tokenizers["tiny-llama"], config, TEXT_ONLY_INPUTS, tmp_path / "model")
    loaded, _, _ = load_reward_model(tmp_path / "model")
    inputs = {**make_batch(tokenizers["tiny-llama"]), "implicit": torch.ones(2, N_IMPLICIT)}
    inputs["implicit_mask"] = torch.tensor([True, True])
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).rewards, model(**inputs).rewards, atol=1e-6)


def test_scorer_adds_the_head_term_for_responses_with_features(tmp_path):
    from gazerm.score import RewardScorer
    from tests.conftest import save_random_model

    directory = save_random_model(tmp_path / "m", predictor="none", fusion="none", implicit_features=True)
    scorer = RewardScorer(directory)
    features = [0.5] * N_IMPLICIT
    prompts, responses = ["Q?", "Q?"], ["Yes.", "No."]
    text_only = scorer.score(prompts, responses)
    mixed = scorer.score(prompts, responses, implicit=[features, None])
    with torch.no_grad():
        term = scorer.model.implicit_head.net(torch.tensor([features])).item()
    assert mixed[1] == text_only[1]
    assert mixed[0] == pytest.approx(text_only[0] + term, abs=1e-5)
    with pytest.raises(ValueError, match="same length"):
        scorer.score(prompts, responses, implicit=[features])
