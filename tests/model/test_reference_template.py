"""``data.template: reference_chat`` against the token ids the paper's reference code reads.

``REFERENCE_IDS`` were produced under the reference's pinned stack (transformers 4.40, tokenizers 0.19,
``~/.cache/gazerm/reference-venv``): gazerm's tiny ``llama`` tokenizer (trained there by
``gazerm.model.tokenizers``, the same ids as here) saved without a pad token or chat template, as
Llama-3 base ships (a ``PreTrainedTokenizerFast`` that prepends BOS), was loaded by the reference's
``MyRewardBase._load_tokenizer``; the conversation rendered by its ``_format_chat``
(``apply_chat_template(tokenize=False)``) and tokenized as its ``preprocess_data_reward`` does
(``tokenizer(text)``). Its ``<PAD>``, ``<|im_start|>`` and ``<|im_end|>`` came out as 493, 494, 495;
its ``add_eos_token = True`` adds nothing to such a tokenizer.
"""

from __future__ import annotations

import numpy as np

from gazerm.model.config import ModelConfig
from gazerm.model.inputs import InputSpec, PromptResponse
from gazerm.model.pipeline import InputPipeline
from gazerm.model.reward_model import NEW_PAD_TOKEN, build_reward_model, build_tokenizer
from gazerm.model.templates import CHATML_TOKENS, prepare_tokenizer
from gazerm.model.tokenizers import build_local_tokenizer

PROMPT, RESPONSE = "How do I bake bread?", "Mix flour and water."
# <s>, <|im_start|> user \n How do I bake bread? <|im_end|> \n, then the assistant turn alike
REFERENCE_IDS = [1, 494, 87, 85, 284, 201, 326, 300, 386, 469, 410, 33, 495, 201]
REFERENCE_IDS += [494, 67, 85, 451, 201, 331, 465, 301, 467, 16, 495, 201]


def llama3_like():
    """The tiny tokenizer as Llama-3 base ships: no pad token, no chat template; with the reference's new
    <PAD> (``model.pad_token: new``), then what ``reference_chat`` adds, as ``build_tokenizer`` does."""
    tokenizer = build_local_tokenizer("llama")
    tokenizer.pad_token = None
    tokenizer.add_special_tokens({"pad_token": NEW_PAD_TOKEN})
    return prepare_tokenizer("reference_chat", tokenizer)


def test_reference_chat_gives_the_token_ids_the_reference_reads():
    tokenizer = llama3_like()
    assert [tokenizer.convert_tokens_to_ids(t) for t in [NEW_PAD_TOKEN, *CHATML_TOKENS]] == [493, 494, 495]
    spec = InputSpec({"predictor": "none"}, max_length=512, template="reference_chat")
    pipeline = InputPipeline.from_spec(spec, tokenizer, ModelConfig(fidelity="reference"))
    prefix, _ = pipeline.encoder.prefix(None, PROMPT)
    empty = np.zeros(0, dtype=np.float32)
    encoded = pipeline.encoder.encode([PromptResponse(prefix, RESPONSE, empty, empty)])[0]
    assert encoded["input_ids"].tolist() == REFERENCE_IDS


def test_a_tokenizer_with_a_chat_template_keeps_it_and_gets_no_new_tokens():
    tokenizer = build_local_tokenizer("llama")
    tokenizer.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    size = len(tokenizer)
    prepare_tokenizer("reference_chat", tokenizer)
    assert len(tokenizer) == size and tokenizer.chat_template.startswith("{% for m in messages %}[")
    assert len(prepare_tokenizer("chat", build_local_tokenizer("llama"))) == size  # only reference_chat adds


def test_the_model_built_on_a_reference_chat_tokenizer_has_rows_for_its_new_tokens():
    config = ModelConfig(fidelity="reference", lora=None)
    tokenizer = build_tokenizer(config, "reference_chat")
    assert tokenizer.chat_template and all(t in tokenizer.get_vocab() for t in CHATML_TOKENS)
    model = build_reward_model(config, tokenizer)
    assert model.backbone.get_input_embeddings().num_embeddings == len(tokenizer)
