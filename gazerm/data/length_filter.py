"""Leaving out rows whose texts are too long, as the paper's reference code does before it splits.

The reference (``utils/dataset_proceser.py``: ``filter_df_lenght_columns``, run by
``_preprocess_convert_chat`` with ``main.py``'s ``--max_length``, 10,000) renders a pair's conversation
ending in the chosen response and the one ending in the rejected response with the backbone tokenizer's
chat template (``apply_chat_template(tokenize=False, add_generation_prompt=False)``) and drops the pair
when the two strings together have *more* than ``max_length`` characters (exactly 10,000 stays). Each
conversation is every turn the reference keeps: the prompt and the response for HelpSteer2 and OASST1,
and for hh-rlhf all earlier turns too (``split_text_human_assistant``), so gazerm counts a row's
``context`` turns in each string as well. It filters each hub split it loads, before it cuts validation
from train, so the test split is filtered too. ``prepare`` does the same per source, before any split,
and counts what it drops.

The limit is a pair's: a row of more than two responses (rankings, ratings) stays only if every pair of
its responses passes, that is if its two longest strings together do, since any two of them can become
a training pair; a single response is counted alone.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field, model_validator

from gazerm.config import StrictConfig
from gazerm.data.schema import PreferenceExample
from gazerm.errors import ConfigError

Turns = list[dict[str, str]]


class LengthFilter(StrictConfig):
    """``filter`` in a prepare config."""

    max_pair_chars: int | None = Field(
        default=None,
        gt=0,
        description="leave out a row any two of whose conversations (context + prompt + a response) together "
        "have more characters than this (the reference: 10000); None: keep every row",
    )
    chat_template: str | None = Field(
        default=None,
        description="tokenizer whose chat template renders each conversation before counting, as the "
        "reference counts: a local directory, or a hub name, whose tokenizer files (not the weights) "
        "prepare then downloads (or reads from the Hugging Face cache); None: the bare turn texts",
    )

    @model_validator(mode="after")
    def _template_needs_a_limit(self) -> LengthFilter:
        if self.chat_template and self.max_pair_chars is None:
            raise ValueError("filter.chat_template only says how filter.max_pair_chars counts; set that too")
        return self

    def too_long(self) -> Callable[[PreferenceExample], bool] | None:
        """Whether a row is over the limit (None: no limit); loads the tokenizer once."""
        if self.max_pair_chars is None:
            return None
        limit = self.max_pair_chars
        length = _chat_length(self.chat_template) if self.chat_template else _bare_length

        def over(example: PreferenceExample) -> bool:
            head = [*example.context, {"role": "user", "content": example.prompt}]
            lengths = sorted(length([*head, {"role": "assistant", "content": r}]) for r in example.responses)
            return sum(lengths[-2:]) > limit

        return over


def _bare_length(turns: Turns) -> int:
    return sum(len(turn["content"]) for turn in turns)


def _chat_length(name: str) -> Callable[[Turns], int]:
    """The length of a conversation rendered by ``name``'s chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"filter.chat_template: tokenizer {name!r} has no chat template")

    def length(turns: Turns) -> int:
        return len(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=False))

    return length
