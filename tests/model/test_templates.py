"""Prompt templates: the plain Human/Assistant transcript and the tokenizer's chat template, with word gaze
staying on the response's tokens in both."""

from __future__ import annotations

import numpy as np
import pytest

from gazerm.errors import ConfigError
from gazerm.features.base import word_spans
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


PROMPT = "How do I bake good bread?"
USER_UPPER = CHATML.replace(
    "{{ m['content'] }}",
    "{% if m['role'] == 'user' %}{{ m['content'] | upper }}{% else %}{{ m['content'] }}{% endif %}",
)


@pytest.mark.parametrize(
    ("kind", "chat_template", "prompt"),
    [
        ("plain", None, PROMPT),
        ("chat", CHATML, PROMPT),
        (
            "chat",
            CHATML.replace("{{ m['content'] }}", "{{ m['content'] | trim }}"),
            f"  {PROMPT} ",
        ),  # Llama 3
    ],
)
def test_render_says_where_the_prompts_words_are(kind, chat_template, prompt):
    template = build_template(kind, chat_tokenizer(chat_template) if chat_template else None)
    rendered = template.render(CONTEXT, prompt)
    assert rendered.text == template.prefix(CONTEXT, prompt)
    for start, end in word_spans(prompt):
        shift = rendered.prompt_start
        assert rendered.text[shift + start : shift + end] == prompt[start:end]
    assert rendered.text.count(PROMPT) == 1  # the context's turns come first and have other words


def test_a_template_that_rewrites_the_prompt_gives_no_prompt_offset():
    template = build_template("chat", chat_tokenizer(USER_UPPER))
    assert template.render(None, PROMPT).prompt_start is None


def gazed_words(encoder: SequenceEncoder, text: str, gaze_mask: np.ndarray) -> list[str]:
    """The runs of non-space characters of ``text`` that the tokens with gaze cover."""
    offsets = encoder.tokenizer(
        text, return_offsets_mapping=True, add_special_tokens=encoder.template.add_special_tokens
    )["offset_mapping"]
    covered = np.zeros(len(text), dtype=bool)
    for (start, end), has_gaze in zip(offsets, gaze_mask, strict=True):
        covered[start:end] |= bool(has_gaze)
    return "".join(char if kept else " " for char, kept in zip(text, covered, strict=True)).split()


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_prompt_gaze_lands_on_the_prompt_tokens_when_the_encoder_gazes_the_prompt(kind):
    tokenizer = chat_tokenizer()
    template = build_template(kind, tokenizer)
    prompt_words, response_words = ReadingTimeModel().predict([PROMPT, RESPONSE])
    response = (np.asarray(response_words.spans), response_words.features)
    items = {}
    for gazes_prompt in (False, True):
        encoder = SequenceEncoder(tokenizer, 256, template, prompt_gaze=gazes_prompt)
        prefix, prompt = encoder.prefix(
            CONTEXT, PROMPT, np.asarray(prompt_words.spans), prompt_words.features
        )
        assert prefix == template.prefix(CONTEXT, PROMPT) and (prompt is not None) == gazes_prompt
        (items[gazes_prompt],) = encoder.encode([PromptResponse(prefix, RESPONSE, *response, prompt=prompt)])
    gaze_mask, gaze = items[True]["gaze_mask"], items[True]["gaze"]
    # The prompt's and the response's tokens carry gaze, word for word; context turns and template text none.
    text = prefix + RESPONSE + template.suffix
    assert gazed_words(encoder, text, gaze_mask) == PROMPT.split() + RESPONSE.split()
    in_prompt = gaze_mask & ~items[False]["gaze_mask"]
    assert gazed_words(encoder, text, in_prompt) == PROMPT.split()
    np.testing.assert_allclose(gaze[in_prompt][:, 0].sum(), prompt_words.features[:, 0].sum(), rtol=1e-5)
    # The response's gaze is what an encoder without prompt gaze gives it.
    np.testing.assert_array_equal(gaze[~in_prompt], items[False]["gaze"][~in_prompt])
    assert not gaze[~gaze_mask].any()


def test_a_prompt_without_gaze_leaves_the_prompt_tokens_without_gaze():
    """Recorded gaze, or shards prepared before prompt gaze was stored: only the response has gaze."""
    tokenizer = chat_tokenizer()
    encoder = SequenceEncoder(tokenizer, 256, build_template("plain", tokenizer), prompt_gaze=True)
    prefix, prompt = encoder.prefix(None, PROMPT, np.zeros(0), np.zeros(0))
    assert prompt is None
    words = ReadingTimeModel().predict([RESPONSE])[0]
    (item,) = encoder.encode([PromptResponse(prefix, RESPONSE, np.asarray(words.spans), words.features)])
    assert gazed_words(encoder, prefix + RESPONSE, item["gaze_mask"]) == RESPONSE.split()
