"""How a conversation and one response become the text the model reads.

- ``plain``: the Human/Assistant transcript HH-RLHF and DSP use (``\\n\\nHuman: …\\n\\nAssistant: `` +
  response), for base backbones and for models trained that way.
- ``chat``: the tokenizer's own chat template (instruct backbones), the response as the assistant turn.
- ``reference_chat``: what the paper's reference code reads (``reward_model_base._load_tokenizer`` and its
  ``tokenizer(text)`` of ``apply_chat_template(..., tokenize=False)``): the tokenizer's chat template or,
  where it has none (Llama-3 base), transformers 4.40's default ChatML one with ``<|im_start|>`` and
  ``<|im_end|>`` added as special tokens (``build_tokenizer`` adds them, before the model grows its
  embeddings), tokenized with the tokenizer's own special tokens on top of the template's: an extra
  ``BOS`` (Llama-3: ``<|begin_of_text|>`` before ChatML; Mistral: a second ``<s>``).

Either way the model input is ``prefix + response + suffix`` with the response copied verbatim, so its
words keep their character offsets shifted by ``len(prefix)`` and word gaze aligns to its tokens.
``render`` also says where the prompt sits in the prefix, for prompt gaze (the ``reference`` layout);
earlier ``context`` turns carry no gaze.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from gazerm.errors import ConfigError

TemplateKind = Literal["plain", "chat", "reference_chat"]
Context = list[dict[str, str]] | None

_PLAIN_SPEAKERS = {"user": "Human", "human": "Human", "prompter": "Human", "assistant": "Assistant"}
_CHAT_ROLES = {
    "human": "user",
    "prompter": "user",
    "user": "user",
    "assistant": "assistant",
    "system": "system",
}


class RenderedPrefix(NamedTuple):
    """A prefix and where the prompt starts in it: the character offset at which the prompt's text
    (spans of its words count from there) was copied, or None where the template changed the prompt."""

    text: str
    prompt_start: int | None


def render_prompt(context: Context, prompt: str) -> str:
    """The plain template's prefix: earlier turns, the prompt, and the ``Assistant:`` cue."""
    return _render_plain(context, prompt).text


def _render_plain(context: Context, prompt: str) -> RenderedPrefix:
    turns = "".join(
        f"\n\n{_PLAIN_SPEAKERS.get(t['role'], t['role'].capitalize())}: {t['content']}" for t in context or []
    )
    head = f"{turns}\n\nHuman: "
    return RenderedPrefix(f"{head}{prompt}\n\nAssistant: ", len(head))


class PlainTemplate:
    kind: TemplateKind = "plain"
    suffix = ""
    add_special_tokens = True  # the tokenizer adds BOS (Llama-style) or [CLS]/[SEP] (encoders)

    def prefix(self, context: Context, prompt: str) -> str:
        return render_prompt(context, prompt)

    def render(self, context: Context, prompt: str) -> RenderedPrefix:
        """The prefix and the prompt's offset in it (always copied verbatim)."""
        return _render_plain(context, prompt)


class ChatTemplate:
    """The tokenizer's chat template; the response is found in the rendering by a placeholder reply."""

    kind: TemplateKind = "chat"
    add_special_tokens = False  # the template writes its own special tokens (BOS, <|im_start|>, …)
    _PLACEHOLDER = "\uffffgazerm reply\uffff"
    _PROMPT_PLACEHOLDER = "\uffffgazerm prompt\uffff"

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"data.template=chat: tokenizer {tokenizer.name_or_path!r} has no chat template; "
                "use data.template=plain"
            )
        self.tokenizer = tokenizer
        _, self.suffix = self._split(None, "?")

    def prefix(self, context: Context, prompt: str) -> str:
        prefix, suffix = self._split(context, prompt)
        if suffix != self.suffix:
            raise ConfigError(
                f"the chat template of {self.tokenizer.name_or_path!r} ends replies differently"
            )
        return prefix

    def render(self, context: Context, prompt: str) -> RenderedPrefix:
        """The prefix and the prompt's offset in it, found by rendering a placeholder prompt. A template
        that trims message contents (Llama 3's) copies the stripped prompt: its words keep their offsets
        relative to one another, so the offset is shifted by the leading whitespace removed. Any other
        change to the prompt gives ``prompt_start=None`` (no prompt gaze)."""
        prefix = self.prefix(context, prompt)
        marked, _ = self._split(context, self._PROMPT_PLACEHOLDER)
        before, found, after = marked.partition(self._PROMPT_PLACEHOLDER)
        if found and before + prompt + after == prefix:
            return RenderedPrefix(prefix, len(before))
        if found and before + prompt.strip() + after == prefix:
            return RenderedPrefix(prefix, len(before) - (len(prompt) - len(prompt.lstrip())))
        return RenderedPrefix(prefix, None)

    def _split(self, context: Context, prompt: str) -> tuple[str, str]:
        messages = [
            {"role": _CHAT_ROLES.get(turn["role"], turn["role"]), "content": turn["content"]}
            for turn in context or []
        ]
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": self._PLACEHOLDER}]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False)
        prefix, found, suffix = rendered.partition(self._PLACEHOLDER)
        if not found:
            raise ConfigError(
                f"data.template=chat: the chat template of {self.tokenizer.name_or_path!r} does not copy the "
                "assistant reply verbatim, so gaze cannot be aligned to it; use data.template=plain"
            )
        return prefix, suffix


class ReferenceChatTemplate(ChatTemplate):
    """The chat template with the tokenizer's special tokens added too, as the reference tokenizes."""

    kind: TemplateKind = "reference_chat"
    add_special_tokens = True


PromptTemplate = PlainTemplate | ChatTemplate  # ReferenceChatTemplate is a ChatTemplate

# transformers 4.40's PreTrainedTokenizerBase.default_chat_template (removed since), which the reference
# falls back to for a tokenizer without a chat template, and the tokens it adds from it.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]


def prepare_tokenizer(kind: TemplateKind, tokenizer: Any) -> Any:
    """``tokenizer`` with what template ``kind`` needs of it before a model is built on it:
    ``reference_chat`` gives a tokenizer without a chat template the ChatML one and its two tokens (new
    embedding rows, after a new ``<PAD>`` as in the reference; their order there follows a ``set``'s, this
    one is fixed)."""
    if kind == "reference_chat" and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.add_special_tokens({"additional_special_tokens": CHATML_TOKENS})
    return tokenizer


def plain_chat_template(tokenizer: Any) -> str:
    """A Jinja chat template that renders a conversation exactly as :class:`PlainTemplate` and the
    tokenizer's special tokens do, so tools that format with ``apply_chat_template`` (TRL, RewardBench,
    vLLM) give an exported plain-template model the token ids it was trained on."""
    with_special = tokenizer("x")["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(with_special)) if with_special[i : i + len(bare)] == bare)
    opening = "".join(tokenizer.convert_ids_to_tokens(with_special[:start]))
    closing = "".join(tokenizer.convert_ids_to_tokens(with_special[start + len(bare) :]))
    return (
        f"{opening}{{% set speakers = {_PLAIN_SPEAKERS!r} %}}{{% for m in messages %}}"
        "{{ '\\n\\n' + speakers.get(m['role'], m['role']|capitalize) + ': ' + m['content'] }}{% endfor %}"
        f"{{% if add_generation_prompt %}}{{{{ '\\n\\nAssistant: ' }}}}{{% endif %}}{closing}"
    )


def build_template(kind: TemplateKind, tokenizer: Any) -> PromptTemplate:
    if kind == "reference_chat":
        return ReferenceChatTemplate(tokenizer)
    return ChatTemplate(tokenizer) if kind == "chat" else PlainTemplate()
