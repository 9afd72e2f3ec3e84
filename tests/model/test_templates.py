"""Prompt templates: the plain Human/Assistant transcript and the tokenizer's chat template, with word gaze
staying on the response's tokens in both."""

from __future__ import annotations

import numpy as np
import pytest

from gazerm.errors import ConfigError
from gazerm.features.reading_model import ReadingTimeModel
from gazerm.model.inputs import PromptResponse, SequenceEncoder
from gazerm.model.templates import ChatTemplate, PlainTemplate, build_template, render_prompt
from gazerm.model.tokenizers import build_local_tokenizer

CONTEXT = [
    {"role": "system", "content": "Be brief."},
    {"role": "human", "content": "Hello."},
    {"role": "assistant", "content": "Hi! What do you need?"},
]
RESPONSE = "Knead the dough for ten minutes, then let it rise somewhere warm."
CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def test_render_prompt_with_context_turns():
    assert render_prompt(CONTEXT, "How do I bake bread?") == (
        "\n\nSystem: Be brief.\n\nHuman: Hello.\n\nAssistant: Hi! What do you need?"
        "\n\nHuman: How do I bake bread?\n\nAssistant: "
    )
    assert render_prompt(None, "Hi?") == render_prompt([], "Hi?") == "\n\nHuman: Hi?\n\nAssistant: "
    assert PlainTemplate().prefix(None, "Hi?") == render_prompt(None, "Hi?")


def chat_tokenizer(template: str = CHATML):
    tokenizer = build_local_tokenizer("llama")
    tokenizer.chat_template = template
    return tokenizer


def test_the_chat_template_frames_the_response_as_the_assistant_turn():
    template = build_template("chat", chat_tokenizer())
    assert isinstance(template, ChatTemplate) and template.suffix == "<|im_end|>\n"
    assert template.prefix(CONTEXT, "How do I bake bread?") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello.<|im_end|>\n"  # human → user
        "<|im_start|>assistant\nHi! What do you need?<|im_end|>\n"
        "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_tokenizer_without_a_chat_template_is_refused():
    with pytest.raises(ConfigError, match=r"has no chat template; use data\.template=plain"):
        build_template("chat", build_local_tokenizer("llama"))


def test_a_template_that_rewrites_the_reply_is_refused():
    rewriting = CHATML.replace("{{ m['content'] }}", "{{ m['content'] | upper }}")
    with pytest.raises(ConfigError, match="does not copy the assistant reply verbatim"):
        build_template("chat", chat_tokenizer(rewriting))


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_word_gaze_lands_on_the_response_tokens_of_the_smollm2_tokenizer(smollm2_tokenizer, kind):
    template = build_template(kind, smollm2_tokenizer)
    encoder = SequenceEncoder(smollm2_tokenizer, 256, template)
    gaze = ReadingTimeModel().predict([RESPONSE])[0]
    prefix = template.prefix(CONTEXT, "How do I bake bread?")
    (item,) = encoder.encode([PromptResponse(prefix, RESPONSE, np.asarray(gaze.spans), gaze.features)])
    ids, gaze_mask = item["input_ids"], item["gaze_mask"]

    text = smollm2_tokenizer.decode(ids)
    assert text == prefix + RESPONSE + template.suffix  # nothing added, nothing lost
    if kind == "chat":
        assert text.startswith("<|im_start|>system\nBe brief.") and text.endswith("<|im_end|>\n")
        assert ids[0] == smollm2_tokenizer.convert_tokens_to_ids("<|im_start|>")  # no BOS doubled in front
    # Exactly the response's tokens carry gaze: together they spell the response, word for word.
    assert smollm2_tokenizer.decode(ids[gaze_mask]).split() == RESPONSE.split()
    words_with_gaze = smollm2_tokenizer.decode(ids[gaze_mask]).split()
    assert len(words_with_gaze) == len(gaze.spans)
    # fixProp is copied to each token of its word; the additive features sum back to the word's value.
    assert np.allclose(item["gaze"][gaze_mask][:, 0].sum(), gaze.features[:, 0].sum(), rtol=1e-5)
    assert not item["gaze"][~gaze_mask].any()
