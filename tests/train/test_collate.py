from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from gazerm.data.schema import Pair, PreferenceExample, examples_to_table
from gazerm.features.featurize import GazeFeaturizer
from gazerm.model.config import ModelConfig
from gazerm.model.reward_model import build_tokenizer
from gazerm.model.templates import render_prompt
from gazerm.train.units import ToUnits
from tests.train.helpers import loss_spec, make_collator

PROMPT = "Say hi."
PREFIX = render_prompt(None, PROMPT)
WORDS = [7, 3, 6, 4, 5]  # chosen length (in words) of units u0…u4: sorted order is u1 u3 u4 u2 u0
REJECTED = "No."


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(ModelConfig())


def chosen_text(words: int) -> str:
    return " ".join(["bread"] * words)


def units_window(examples: list[PreferenceExample], kind: str = "pairwise", num_outputs: int = 1):
    """The units of ``examples`` as one window (Arrow table), with predicted gaze."""
    return ToUnits(loss_spec(kind, num_outputs))(GazeFeaturizer()(examples_to_table(examples)))


def example(index: int, responses: list[str], **labels) -> PreferenceExample:
    return PreferenceExample(f"u{index}", "f.jsonl", index, PROMPT, responses, "pairwise", **labels)


@pytest.fixture(scope="module")
def pairwise_batch() -> pa.Table:
    return units_window(
        [example(i, [chosen_text(k), REJECTED], pairs=[Pair(0, 1, k / 10)]) for i, k in enumerate(WORDS)]
    )


def unpadded(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def test_window_is_cut_into_length_sorted_micro_batches(tokenizer, pairwise_batch):
    micro_batches = make_collator(tokenizer, 128, micro_batch_size=2, kind="pairwise")(pairwise_batch)
    assert len(micro_batches) == 3  # ceil(5 / 2)
    assert [m.labels.sources for m in micro_batches] == [["u1", "u3"], ["u4", "u2"], ["u0"]]
    for micro in micro_batches:
        words = [WORDS[int(source[1:])] for source in micro.labels.sources]
        assert micro.labels.margin.tolist() == pytest.approx([k / 10 for k in words])
        expected = [unpadded(tokenizer, PREFIX + chosen_text(k)) for k in words]
        expected += [unpadded(tokenizer, PREFIX + REJECTED)] * len(words)  # chosen rows first, then rejected
        width = max(map(len, expected))
        assert micro.inputs.input_ids.shape == micro.inputs.attention_mask.shape == (2 * len(words), width)
        assert micro.inputs.gaze.shape == (2 * len(words), width, 5)
        for row, ids in enumerate(expected):
            padding = [tokenizer.pad_token_id] * (width - len(ids))
            assert micro.inputs.input_ids[row].tolist() == ids + padding
            assert micro.inputs.attention_mask[row].tolist() == [1] * len(ids) + [0] * len(padding)


def test_gaze_and_response_masks_cover_the_response_tokens_only(tokenizer, pairwise_batch):
    for micro in make_collator(tokenizer, 128, micro_batch_size=2, kind="pairwise")(pairwise_batch):
        texts = [chosen_text(WORDS[int(s[1:])]) for s in micro.labels.sources] + [REJECTED] * len(
            micro.labels.sources
        )
        for row, text in enumerate(texts):
            ids, attended = micro.inputs.input_ids[row], micro.inputs.attention_mask[row].bool()
            response, gaze_mask = micro.inputs.response_mask[row], micro.inputs.gaze_mask[row]
            prompt_part = tokenizer.decode(ids[attended & ~response], skip_special_tokens=True)
            response_part = tokenizer.decode(ids[response])
            assert prompt_part + response_part == PREFIX + text and response_part.strip() == text
            assert not (response & ~attended).any() and not response[0]  # no pad, no BOS
            visible = torch.tensor([bool(tokenizer.decode([i]).strip()) for i in ids.tolist()])
            assert gaze_mask.tolist() == (response & visible).tolist()
            assert (micro.inputs.gaze[row][~gaze_mask] == 0).all()
            assert (
                micro.inputs.gaze[row][gaze_mask][:, 4] > 0
            ).all()  # fixProp: every word is read by someone


def test_left_truncation_keeps_the_end_of_the_response(tokenizer):
    response = "The quick brown fox jumps over the lazy dog. Reading times grow with word length."
    batch = units_window([example(0, [response, REJECTED], pairs=[Pair(0, 1)])])
    (micro,) = make_collator(tokenizer, 10, micro_batch_size=4, kind="pairwise")(batch)
    chosen = micro.inputs.input_ids[0]
    assert len(chosen) == 10 and micro.inputs.attention_mask[0].all()
    assert chosen[0] == tokenizer.bos_token_id
    assert response.endswith(tokenizer.decode(chosen[1:]).strip()) and tokenizer.decode(chosen).endswith(
        "length."
    )
    assert (
        micro.inputs.response_mask[0, 1:].all() and micro.inputs.gaze_mask[0, -1]
    )  # the prompt is cut entirely
    assert micro.labels.margin.tolist() == [0.0]


def test_right_truncation_keeps_the_start_as_the_reference_does(tokenizer):
    response = "The quick brown fox jumps over the lazy dog. Reading times grow with word length."
    batch = units_window([example(0, [response, REJECTED], pairs=[Pair(0, 1)])])
    collate = make_collator(tokenizer, 10, micro_batch_size=4, truncation_side="right")
    (micro,) = collate(batch)
    chosen = micro.inputs.input_ids[0]
    full = tokenizer(PREFIX + response)["input_ids"]
    assert chosen.tolist() == full[:10]  # BOS and the prompt first; the response's end is cut
    assert not micro.inputs.response_mask[0, :3].any()


@pytest.mark.parametrize("num_outputs", [1, 2])
def test_regression_micro_batches_carry_targets(tokenizer, num_outputs):
    responses = [chosen_text(5), chosen_text(2), chosen_text(3)]
    attributes = [[float(i), float(i) + 0.5] for i in range(3)]
    batch = units_window(
        [example(0, responses, scores=[0.0, 1.0, 2.0], attribute_scores=attributes)],
        "regression",
        num_outputs,
    )
    micro_batches = make_collator(tokenizer, 128, micro_batch_size=2, kind="regression")(batch)
    assert [m.inputs.input_ids.shape[0] for m in micro_batches] == [2, 1]
    targets = torch.cat([m.labels.targets for m in micro_batches])
    expected = np.array(attributes if num_outputs == 2 else [[0.0], [1.0], [2.0]], dtype=np.float32)[
        [1, 2, 0]
    ]
    assert targets.shape == (3, num_outputs) and targets.tolist() == expected.tolist()


def test_listwise_micro_batches_stack_lists_and_index_them(tokenizer):
    lists = [[chosen_text(4), chosen_text(1), chosen_text(2)], [chosen_text(9), REJECTED]]
    batch = units_window(
        [example(0, lists[0], ranking=[1, 2, 0]), example(1, lists[1], pairs=[Pair(0, 1)])], "listwise"
    )
    (micro,) = make_collator(tokenizer, 128, micro_batch_size=2, kind="listwise")(batch)
    # The shorter list (by its longest response) comes first; each list's texts in tier order.
    assert micro.labels.list_index.tolist() == [[0, 1, 2], [3, 4, -1]]
    assert micro.labels.tiers.tolist() == [[0, 1, 2], [0, 1, 0]]
    texts = [lists[0][i] for i in (1, 2, 0)] + lists[1]
    for row, text in enumerate(texts):
        ids = micro.inputs.input_ids[row][micro.inputs.attention_mask[row].bool()].tolist()
        assert ids == unpadded(tokenizer, PREFIX + text)
    assert micro.labels.sources == ["u0", "u1"]


@pytest.mark.parametrize("kind", ["pairwise", "regression", "listwise"])
def test_a_collator_that_gazes_the_prompt_adds_the_prompts_tokens_and_nothing_else(tokenizer, kind):
    """The reference layout: the prompt's words carry their gaze too; the response's gaze is unchanged."""
    examples = [
        example(i, [chosen_text(k), REJECTED], pairs=[Pair(0, 1)], scores=[1.0, 0.0])
        for i, k in enumerate(WORDS[:2])
    ]
    batch = units_window(examples, kind)
    plain = make_collator(tokenizer, 128, micro_batch_size=4, kind=kind)(batch)
    gazed = make_collator(tokenizer, 128, micro_batch_size=4, kind=kind, prompt_gaze=True)(batch)
    for without, with_prompt in zip(plain, gazed, strict=True):
        assert torch.equal(with_prompt.inputs.input_ids, without.inputs.input_ids)
        inputs, added = with_prompt.inputs, with_prompt.inputs.gaze_mask & ~without.inputs.gaze_mask
        assert not (without.inputs.gaze_mask & ~inputs.gaze_mask).any()
        for row in range(inputs.input_ids.shape[0]):
            # the prompt's words (the spaces between them are tokens of their own, without gaze)
            assert tokenizer.decode(inputs.input_ids[row][added[row]]) == PROMPT.replace(" ", "")
        assert not (added & inputs.response_mask).any()
        assert torch.equal(inputs.gaze[~added], without.inputs.gaze[~added])
        assert (inputs.gaze[added][:, 4] > 0).all()
    old = batch.set_column(
        batch.schema.get_field_index("prompt_spans"),
        "prompt_spans",
        pa.array([[]] * batch.num_rows, pa.list_(pa.int32())),
    )
    for without, no_prompt_gaze in zip(
        plain, make_collator(tokenizer, 128, 4, kind, prompt_gaze=True)(old), strict=True
    ):
        assert torch.equal(no_prompt_gaze.inputs.gaze_mask, without.inputs.gaze_mask)
