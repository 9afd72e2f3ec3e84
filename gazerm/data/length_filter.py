"""Leaving out rows whose texts are too long, as the paper's reference code does before it splits.

The reference (``utils/dataset_proceser.py``: ``filter_df_lenght_columns``, run by
``_preprocess_convert_chat`` with ``main.py``'s ``--max_length``, 10,000) renders a pair's prompt +
chosen and prompt + rejected each as one user and one assistant turn with the backbone tokenizer's
chat template (``apply_chat_template(tokenize=False, add_generation_prompt=False)``) and drops the
pair when the two strings together have *more* than ``max_length`` characters (exactly 10,000 stays).
It does so on each hub split it loads, before it cuts validation from train, so the test split is
filtered too. ``prepare`` does the same per source, before any split, and counts what it drops.

A row with more than two responses counts all of them (a pair's rule, summed over its responses);
earlier context turns are not counted (the reference's pairs have none).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gazerm.data.schema import PreferenceExample
from gazerm.errors import ConfigError


class LengthFilter(BaseModel):
    """``filter`` in a prepare config."""

    model_config = ConfigDict(extra="forbid")

    max_pair_chars: int | None = Field(
        default=None,
        gt=0,
        description="leave out a row whose prompt + response texts, one per response, together have more "
        "characters than this (the reference: 10000); None: keep every row",
    )
    chat_template: str | None = Field(
        default=None,
        description="tokenizer (hub name or local directory) whose chat template renders each prompt + "
        "response before counting, as the reference counts; None: the bare prompt and response",
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
            return sum(length(example.prompt, response) for response in example.responses) > limit

        return over


def _bare_length(prompt: str, response: str) -> int:
    return len(prompt) + len(response)


def _chat_length(name: str) -> Callable[[str, str], int]:
    """The length of a prompt and a response rendered by ``name``'s chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"filter.chat_template: tokenizer {name!r} has no chat template")

    def length(prompt: str, response: str) -> int:
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return len(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=False))

    return length
