"""``add_token_rows``: the rows a tokenizer's added tokens (``model.pad_token: new``) get, whole or under
DeepSpeed ZeRO-3, where every rank holds only a slice of the embedding matrix."""

from __future__ import annotations

import socket

import deepspeed
import pytest
import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.integrations import HfDeepSpeedConfig

from gazerm.model.reward_model import add_token_rows

ZERO3 = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}}
ROWS, ADDED = 32, 3


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=ROWS, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def one_rank_group(monkeypatch):
    """A one-process gloo group, as a ZeRO-3 worker has it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    deepspeed.init_distributed(dist_backend="gloo")
    yield
    dist.destroy_process_group()


def test_new_rows_are_drawn_from_the_seed_and_old_rows_kept():
    model = tiny_llama()
    before = model.get_input_embeddings().weight.detach().clone()
    add_token_rows(model, ROWS + ADDED, seed=7)
    again = tiny_llama()
    add_token_rows(again, ROWS + ADDED, seed=7)
    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape == (ROWS + ADDED, 8) and torch.equal(weight[:ROWS], before)
    assert torch.equal(weight, again.get_input_embeddings().weight.detach())
    assert 0 < weight[ROWS:].std() < 0.1  # N(0, initializer_range=0.02), not the old rows' mean


def test_zero3_partitioned_embeddings_get_the_same_rows(one_rank_group):
    """Resized under ``zero.Init``, as transformers 4.x resizes under ZeRO-3, the new matrices are
    partitioned when the rows are drawn: every rank holds a ``[0]``-shaped slice."""
    whole = tiny_llama()
    add_token_rows(whole, ROWS + ADDED, seed=7)
    hf_deepspeed = HfDeepSpeedConfig(ZERO3)  # noqa: F841 (kept alive: transformers reads ZeRO-3 off it)
    with deepspeed.zero.Init(config_dict_or_path=ZERO3):
        partitioned = tiny_llama()
        layers = [partitioned.get_input_embeddings, partitioned.get_output_embeddings]
        before = [gathered_copy(layer().weight) for layer in layers]
        add_token_rows(partitioned, ROWS + ADDED, seed=7)
    for layer, old, expected in zip(
        layers, before, [whole.get_input_embeddings(), whole.get_output_embeddings()], strict=True
    ):
        assert layer().weight.shape == (0,)
        weight = gathered_copy(layer().weight)
        assert torch.equal(weight[:ROWS], old) and torch.equal(weight[ROWS:], expected.weight.detach()[ROWS:])


def gathered_copy(weight: torch.nn.Parameter) -> torch.Tensor:
    with deepspeed.zero.GatheredParameters(weight):
        return weight.detach().clone()
