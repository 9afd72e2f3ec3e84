"""Prompt + response text (+ per-word gaze) → token ids, masks and token-aligned gaze.

Training and scoring both go through :class:`SequenceEncoder`, so a model scores text exactly as
it saw it in training.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jinja2 import TemplateError

from gazerm.errors import GazermError, PathNotFoundError
from gazerm.features.alignment import token_gaze
from gazerm.features.base import N_FEATURES
from gazerm.model.config import GazeSpread, TruncationSide
from gazerm.model.templates import Context, PlainTemplate, PromptTemplate

log = logging.getLogger(__name__)

INPUTS_FILE = "inputs.json"
# Tokens of prefix kept beyond max_length when trimming a context: where the cut falls a word may
# tokenize differently, far from the tokens the model reads.
TRIM_SLACK = 16


@dataclass(frozen=True)
class InputSpec:
    """How training built a model's inputs, saved with the model so scoring builds the same: the gaze
    predictor its data used (``{"predictor": "none"}`` for text-only data), the token budget and the
    prompt template."""

    gaze: dict[str, Any]
    max_length: int
    template: str = "plain"

    def write(self, directory: str | Path) -> None:
        (Path(directory) / INPUTS_FILE).write_text(
            json.dumps({"gaze": self.gaze, "max_length": self.max_length, "template": self.template})
        )

    @classmethod
    def read(cls, directory: str | Path) -> InputSpec:
        path = Path(directory) / INPUTS_FILE
        if not path.is_file():
            raise PathNotFoundError(f"{path} not found: a reward model directory records how to build inputs")
        return cls(**json.loads(path.read_text()))


@dataclass
class PromptGaze:
    """The prompt's word gaze, placed: ``start`` is the character offset of the prompt in the rendered
    prefix (``PromptTemplate.render``), ``spans`` (relative to the prompt) and ``features`` its words'."""

    start: int
    spans: np.ndarray
    features: np.ndarray


@dataclass
class PromptResponse:
    """One prompt+response to tokenize: ``prefix`` is the rendered conversation before the response
    (``PromptTemplate.prefix``); ``spans``/``features`` are the response's flattened word gaze,
    ``implicit`` its behaviour features (empty when no session saw it), ``prompt`` the prompt's word gaze
    (:meth:`SequenceEncoder.prefix`; used by encoders that gaze the prompt, the ``reference`` layout)."""

    prefix: str
    text: str
    spans: np.ndarray
    features: np.ndarray
    implicit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    prompt: PromptGaze | None = None


@dataclass
class ModelInputs:
    """A padded batch as the reward model's ``forward`` takes it; ``B`` rows, ``T`` tokens."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    gaze: torch.Tensor  # (B, T, N_FEATURES) float32, aligned to the tokens
    gaze_mask: torch.Tensor  # (B, T) bool: tokens that have gaze
    response_mask: torch.Tensor  # (B, T) bool: the response's tokens (LM loss); not a forward input
    implicit: torch.Tensor  # (B, D) float32: D behaviour features, 0 when no row has any
    implicit_mask: torch.Tensor  # (B,) bool: rows that have implicit features

    def to(self, device: torch.device | str) -> ModelInputs:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def forward_kwargs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of ``RewardModel.forward``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "response_mask"}


class SequenceEncoder:
    """Tokenizes prompt+response with offsets and aligns the response's word gaze to its tokens, and with
    ``prompt_gaze`` (``ModelConfig.gazes_prompt``: the ``reference`` layout) the prompt's word gaze to the
    prompt's tokens inside the prefix. Earlier context turns and the template's own text get none.

    The text is ``prefix + response + template.suffix``. Long inputs are truncated from the left, so
    the end of the response (the token the reward is pooled from in decoder models) is always kept;
    ``truncation_side="right"`` cuts their end instead (``ModelConfig.truncation_side``, the reference's).
    ``gaze_spread`` says how a word's gaze spreads over its tokens (``gazerm.features.alignment``).
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        template: PromptTemplate | None = None,
        prompt_gaze: bool = False,
        truncation_side: TruncationSide = "left",
        gaze_spread: GazeSpread = "additive",
    ) -> None:
        self.tokenizer = tokenizer
        # Read once: padding (which a training loop may do while its prefetch thread encodes) then never
        # touches the tokenizer, which must not serve two threads at once (see _counting_tokenizer).
        self.pad_token_id = tokenizer.pad_token_id
        self.divide_all = gaze_spread == "all"
        self.tokenizer.truncation_side = truncation_side
        self.truncation_side = truncation_side
        self.max_length = max_length
        self.template = template or PlainTemplate()
        self.prompt_gaze = prompt_gaze
        self._warned = False
        self._per_thread = threading.local()

    def _counting_tokenizer(self) -> Any:
        """This thread's copy of the tokenizer, for counting tokens beside ``encode``: a fast tokenizer must
        not serve two threads at once (a call with other truncation settings mutates it while another
        holds it: "Already borrowed"), and a server counts requests' tokens on its request threads while a
        batch is being encoded."""
        if not hasattr(self._per_thread, "tokenizer"):
            self._per_thread.tokenizer = copy.deepcopy(self.tokenizer)
        return self._per_thread.tokenizer

    def prefix(
        self,
        context: Context,
        prompt: str,
        spans: np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> tuple[str, PromptGaze | None]:
        """The rendered conversation before the response, and the prompt's word gaze (``spans``,
        ``features``, flattened or not) placed where the template put the prompt: None where this encoder
        does not gaze the prompt, the prompt has no gaze, or the template did not copy it verbatim."""
        if not self.prompt_gaze or spans is None or np.size(spans) == 0:
            return self.template.prefix(context, prompt), None
        rendered = self.template.render(context, prompt)
        if rendered.prompt_start is None:
            if not self._warned:
                log.warning("the chat template changes the prompt's text: its gaze is left out")
                self._warned = True
            return rendered.text, None
        return rendered.text, PromptGaze(rendered.prompt_start, np.asarray(spans), np.asarray(features))

    def trim_context(
        self, context: Context, prompt: str, responses: list[str] = ()
    ) -> tuple[Context, str, list[int]]:
        """The context (and, without prompt gaze and context, the prompt) with what left truncation would
        cut from every sequence of this prefix dropped before tokenizing them: leading turns, then the
        start of the first kept text, keeping at least ``max_length`` + :data:`TRIM_SLACK` tokens of
        prefix, so the tokens the model reads are those of the untrimmed prefix. Also the tokens each
        response costs (with the prefix, at most ``max_length``). The prefix is tokenized a few times
        (a binary search over the turns), never once per response."""

        tokenizer = self._counting_tokenizer()

        def prefix_offsets(turns: Context, text: str) -> tuple[str, list[tuple[int, int]]]:
            rendered = self.template.prefix(turns, text)
            offsets = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"
            ]
            return rendered, offsets

        keep = self.max_length + TRIM_SLACK
        turns = list(context) if context else []
        rendered, offsets = prefix_offsets(turns, prompt)
        trims = self.truncation_side == "left"  # right truncation keeps the prefix's start: nothing to drop
        if trims and len(offsets) > keep and turns:
            dropped, most = 0, len(turns)  # the most leading turns that can go, by bisection
            while dropped < most:
                middle = (dropped + most + 1) // 2
                try:
                    fits = len(prefix_offsets(turns[middle:], prompt)[1]) >= keep
                except (TemplateError, GazermError):  # a template refusing the shortened conversation
                    fits = False
                if fits:
                    dropped = middle
                else:
                    most = middle - 1
            turns = turns[dropped:]
            rendered, offsets = prefix_offsets(turns, prompt)
        if trims and len(offsets) > keep:
            cut = offsets[len(offsets) - keep][0]  # every character before it is truncated away
            if turns:
                first = turns[0]["content"]
                start = rendered.find(first) if first else -1
                if 0 <= start < cut < start + len(first):
                    turns[0] = {**turns[0], "content": first[cut - start :]}
            elif not self.prompt_gaze:
                start = rendered.find(prompt)
                if 0 <= start < cut < start + len(prompt):
                    prompt = prompt[cut - start :]
            rendered, offsets = prefix_offsets(turns, prompt)
        special = len(tokenizer("").input_ids) if self.template.add_special_tokens else 0
        lengths = tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []
        suffix = len(tokenizer(self.template.suffix, add_special_tokens=False).input_ids)
        tokens = [min(self.max_length, special + len(offsets) + len(ids) + suffix) for ids in lengths]
        return (turns if context is not None else None), prompt, tokens

    def encode(self, sequences: list[PromptResponse]) -> list[dict[str, np.ndarray]]:
        encoded = self.tokenizer(
            [s.prefix + s.text + self.template.suffix for s in sequences],
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            add_special_tokens=self.template.add_special_tokens,
        )
        items = []
        for index, sequence in enumerate(sequences):
            offsets = encoded["offset_mapping"][index]
            gaze, gaze_mask = token_gaze(
                offsets,
                sequence.spans.reshape(-1, 2),
                sequence.features.reshape(-1, N_FEATURES),
                char_shift=len(sequence.prefix),
                divide_all=self.divide_all,
            )
            if self.prompt_gaze and sequence.prompt is not None:
                prompt_gaze, prompt_mask = token_gaze(
                    offsets,
                    sequence.prompt.spans.reshape(-1, 2),
                    sequence.prompt.features.reshape(-1, N_FEATURES),
                    char_shift=sequence.prompt.start,
                    divide_all=self.divide_all,
                )
                gaze[prompt_mask], gaze_mask = prompt_gaze[prompt_mask], gaze_mask | prompt_mask
            response_start = len(sequence.prefix)
            items.append(
                {
                    "input_ids": np.asarray(encoded["input_ids"][index], dtype=np.int64),
                    "gaze": gaze,
                    "gaze_mask": gaze_mask,
                    "response_mask": np.array([end > response_start for _, end in offsets], dtype=bool),
                    "implicit": _implicit_vector(sequence.implicit),
                }
            )
        return items

    def pad(self, items: list[dict[str, np.ndarray]]) -> ModelInputs:
        """Right-pad a list of encoded sequences to their longest one."""
        length = max(len(item["input_ids"]) for item in items)
        implicit_dim = _implicit_dim(items)
        batch = {
            "input_ids": torch.full((len(items), length), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(items), length), dtype=torch.long),
            "gaze": torch.zeros((len(items), length, N_FEATURES), dtype=torch.float32),
            "gaze_mask": torch.zeros((len(items), length), dtype=torch.bool),
            "response_mask": torch.zeros((len(items), length), dtype=torch.bool),
            "implicit": torch.zeros((len(items), implicit_dim), dtype=torch.float32),
            "implicit_mask": torch.zeros(len(items), dtype=torch.bool),
        }
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            batch["input_ids"][row, :n] = torch.from_numpy(item["input_ids"])
            batch["attention_mask"][row, :n] = 1
            batch["gaze"][row, :n] = torch.from_numpy(item["gaze"])
            batch["gaze_mask"][row, :n] = torch.from_numpy(item["gaze_mask"])
            batch["response_mask"][row, :n] = torch.from_numpy(item["response_mask"])
            if item["implicit"] is not None:
                batch["implicit"][row] = torch.from_numpy(item["implicit"])
                batch["implicit_mask"][row] = True
        return ModelInputs(**batch)


def _implicit_vector(values: np.ndarray) -> np.ndarray | None:
    """A response's implicit features as a float32 vector, or None when it has none."""
    vector = np.asarray(values, dtype=np.float32).ravel()
    return vector if vector.size else None


def _implicit_dim(items: list[dict[str, np.ndarray]]) -> int:
    """The length of the batch's implicit vectors (0 when no row has any); one prepared dataset has one
    length, so differing ones mean rows of two datasets were mixed."""
    sizes = {item["implicit"].size for item in items if item["implicit"] is not None}
    if len(sizes) > 1:
        raise ValueError(
            f"rows with implicit feature vectors of different lengths {sorted(sizes)} in one batch"
        )
    return sizes.pop() if sizes else 0
