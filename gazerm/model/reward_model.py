"""A reward model: a transformer backbone (optionally LoRA), gaze fusion, pooling and a linear value head.

The backbone is a bare transformer (``AutoModel``) unless the LM loss is wanted; then it is the causal LM
(``AutoModelForCausalLM``), whose inner transformer gives the hidden states and whose ``lm_head`` gives
next-token logits from the *same* forward pass.
"""

from __future__ import annotations

import importlib.util
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralConfig,
    MistralForCausalLM,
    MistralModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from gazerm.errors import ConfigError
from gazerm.features.implicit import N_IMPLICIT
from gazerm.model.attention import backbone_attention
from gazerm.model.backbones import check_attention, check_lora_targets, resolve_backbone
from gazerm.model.config import LoraSettings, ModelConfig, Pooling
from gazerm.model.fusion import FusedInputs, fuse
from gazerm.model.implicit_head import ImplicitHead
from gazerm.model.packing import attention_key_cost, pack, row_width, unpack
from gazerm.model.pooling import pool
from gazerm.model.prefix_sharing import share_prefixes
from gazerm.model.projector import GazeProjector
from gazerm.model.templates import TemplateKind, prepare_tokenizer
from gazerm.model.tokenizers import build_local_tokenizer


@dataclass
class RewardOutput:
    rewards: torch.Tensor  # (B,) float32, or (B, num_outputs) for multi-attribute heads
    lm_logits: torch.Tensor | None = None  # (B, T, V), aligned to input_ids


class RewardModel(nn.Module):
    """``backbone`` is a transformers model, or a ``PeftModel`` around one (LoRA layers injected in place).

    The projector and value head live outside the backbone, so LoRA never freezes them and they are
    saved separately from the backbone's weights.
    """

    def __init__(self, backbone: PreTrainedModel | PeftModel, config: ModelConfig):
        super().__init__()
        self.model_config = config
        self.backbone = backbone
        hidden = self.transformer.get_input_embeddings().embedding_dim
        self.pooling: Pooling = config.pooling or ("cls" if is_encoder(self.transformer.config) else "last")
        reference = config.gaze_layout == "reference"
        self.projector = (
            None
            if config.fusion == "none"
            else GazeProjector(
                config.features_used, config.fp_hidden, hidden, config.fp_dropout, layer_norms=reference
            )
        )
        # The reference concat layout's <eye/> and </eye> embeddings: outside the backbone (so LoRA never
        # freezes them) and saved with the projector; learned unless ``train_gaze`` is false.
        self.separators = (
            nn.Parameter(self._separator_init(config), requires_grad=config.train_gaze)
            if reference and config.fusion == "concat"
            else None
        )
        if self.projector is not None and not config.train_gaze:
            self.projector.requires_grad_(False)
        self.value_head = nn.Linear(hidden, config.num_outputs, bias=config.head == "gazerm")
        self.implicit_head = (
            ImplicitHead(
                config.implicit_dim or N_IMPLICIT, config.fp_hidden, config.num_outputs, config.fp_dropout[0]
            )
            if config.implicit_features
            else None
        )
        if config.head == "gazerm":
            # Small init keeps first rewards near 0: the first pairwise losses sit near log 2 (as OpenRLHF).
            nn.init.normal_(self.value_head.weight, std=1 / (hidden + 1))
            nn.init.zeros_(self.value_head.bias)
        else:  # a *ForSequenceClassification score layer, as transformers initialises it
            nn.init.normal_(self.value_head.weight, std=0.02)

    def freeze_head_bias(self) -> None:
        """Keep the value head's bias (where it has one) at 0: a loss that sees only reward differences
        gives it no signal (``LossKind.shift_invariant``)."""
        if self.value_head.bias is not None:
            self.value_head.bias.requires_grad_(False)

    def _separator_init(self, config: ModelConfig) -> torch.Tensor:
        """``(2, H)``: the mean token embedding twice, or (``separator_init: normal``) two rows drawn as
        transformers 4.40 draws new embedding rows, N(0, initializer_range): the reference's frozen
        ``<eye/>``/``</eye>`` token rows."""
        embeddings = self.transformer.get_input_embeddings()
        if config.separator_init == "mean":
            return mean_embedding(embeddings).expand(2, -1).clone()
        std = getattr(self.transformer.config, "initializer_range", 0.02)
        return torch.randn(2, embeddings.embedding_dim, dtype=embeddings.weight.dtype) * std

    @property
    def hf_model(self) -> PreTrainedModel:
        """The transformers model itself (a causal LM when built with ``lm_head``), LoRA layers included."""
        return self.backbone.get_base_model() if isinstance(self.backbone, PeftModel) else self.backbone

    @property
    def transformer(self) -> PreTrainedModel:
        """The bare transformer that returns hidden states (``LlamaModel`` inside ``LlamaForCausalLM``)."""
        return self.hf_model.base_model

    @property
    def key_cost(self) -> float:
        """A key's attention cost against a slot's through the weights: how wide packed rows pay."""
        return attention_key_cost(self.transformer.config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        gaze: torch.Tensor | None = None,
        gaze_mask: torch.Tensor | None = None,
        return_lm_logits: bool = False,
        implicit: torch.Tensor | None = None,
        implicit_mask: torch.Tensor | None = None,
        packed: bool = False,
        groups: int = 1,
        shared_prefix: bool = False,
    ) -> RewardOutput:
        """``input_ids``/``attention_mask`` ``(B, T)``; ``gaze`` ``(B, T, 5)`` float and ``gaze_mask``
        ``(B, T)`` bool, aligned to the tokens (needed unless ``fusion`` is ``none``); ``implicit``
        ``(B, implicit_dim)`` and ``implicit_mask`` ``(B,)`` for a model with ``implicit_features``
        (without them every response is scored as one without session logs). ``packed``: the backbone
        runs on the attended slots only (``gazerm.model.packing``); same outputs, no compute on padding.
        A model without a text term (``text: false``) never runs the backbone. ``groups`` > 1 cuts the
        rows into that many consecutive equal groups and runs each as its own forward, padded to its own
        longest row (right padding cut back; ``model.pair_forward: separate``). ``shared_prefix``: the rows
        are P chosen then P rejected ones, each pair run as one sequence whose common prefix is computed
        once (``gazerm.model.prefix_sharing``, ``model.pair_forward: shared``); same outputs."""
        if groups > 1:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "gaze": gaze}
            inputs |= {"gaze_mask": gaze_mask, "implicit": implicit, "implicit_mask": implicit_mask}
            return self._grouped(groups, inputs, return_lm_logits=return_lm_logits, packed=packed)
        if not self.model_config.text:
            return RewardOutput(self.head_rewards(None, implicit, implicit_mask))
        fused = self._fused(input_ids, attention_mask, gaze, gaze_mask)
        if shared_prefix:
            hidden = self._shared_prefix_hidden(fused, packed)
        elif packed:
            hidden = self._packed_hidden(fused)
        else:
            hidden = self._hidden(fused.inputs_embeds, fused.attention_mask, fused.position_ids)
        pooled = pool(hidden, fused.attention_mask, self.pooling, fused.text_offset)
        rewards = self.head_rewards(pooled, implicit, implicit_mask)
        lm_logits = self._lm_logits(hidden[:, fused.text_offset :]) if return_lm_logits else None
        return RewardOutput(rewards, lm_logits)

    def _grouped(self, groups: int, inputs: dict[str, torch.Tensor | None], **options: bool) -> RewardOutput:
        """:meth:`forward` once per group of rows, each cut to its longest attended row; the outputs
        concatenated in row order (LM logits zero-padded back to the batch's length)."""
        rows, length = inputs["input_ids"].shape
        if rows % groups:
            raise ValueError(f"{rows} rows cannot be cut into {groups} equal groups")
        outputs = []
        for group in range(groups):
            part = slice(group * rows // groups, (group + 1) * rows // groups)
            longest = int(inputs["attention_mask"][part].sum(-1).max())
            cut = {
                name: _rows(value, part, longest if name in _TOKEN_ALIGNED else None)
                for name, value in inputs.items()
            }
            outputs.append(self.forward(**cut, **options))
        rewards = torch.cat([output.rewards for output in outputs])
        if outputs[0].lm_logits is None:
            return RewardOutput(rewards)
        logits = [F.pad(o.lm_logits, (0, 0, 0, length - o.lm_logits.shape[1])) for o in outputs]
        return RewardOutput(rewards, torch.cat(logits))

    def pooled_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        gaze: torch.Tensor | None = None,
        gaze_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, H)``: what the value head reads, the backbone's pooled hidden state after gaze fusion. A
        frozen model's are fixed per response, which is what lets ``gazerm.train.frozen`` cache them."""
        fused = self._fused(input_ids, attention_mask, gaze, gaze_mask)
        hidden = self._hidden(fused.inputs_embeds, fused.attention_mask, fused.position_ids)
        return pool(hidden, fused.attention_mask, self.pooling, fused.text_offset)

    def head_rewards(
        self,
        pooled: torch.Tensor | None,
        implicit: torch.Tensor | None = None,
        implicit_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rewards ``(B,)`` (``(B, num_outputs)`` for several outputs) from the pooled features ``(B, H)``
        (None for a model without a text term) plus the implicit head's term where a row has features
        (``implicit`` ``(B, D)``, ``D`` = 0 when no row of the batch has any: a model without a text term
        then gives every row 0, as it does a single row without features)."""
        if pooled is not None:
            rewards = self.value_head(pooled.to(self.value_head.weight.dtype)).float()
        else:
            rewards = torch.zeros(implicit.shape[0], self.model_config.num_outputs, device=implicit.device)
        if self.implicit_head is not None and implicit is not None and implicit.shape[-1] > 0:
            rewards = rewards + self.implicit_head(implicit, implicit_mask).float()
        return rewards.squeeze(-1) if self.model_config.num_outputs == 1 else rewards

    def _fused(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        gaze: torch.Tensor | None,
        gaze_mask: torch.Tensor | None,
    ) -> FusedInputs:
        return fuse(
            self.model_config.fusion,
            self.projector,
            self.transformer.get_input_embeddings()(input_ids),
            attention_mask,
            gaze,
            gaze_mask,
            layout=self.model_config.gaze_layout,
            separators=self.separators,
            positions=self.model_config.positions,
        )

    def _hidden(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.transformer(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state

    def _packed_hidden(self, fused: FusedInputs) -> torch.Tensor:
        """``(B, S, H)`` hidden states from packed rows: one for flash-attn's varlen kernel (transformers
        reads packing from position ids only in a one-row batch there), else the rows ``row_width`` finds
        cheapest (a dense block-diagonal mask's keys cost more the longer a row). Without a mask,
        transformers tells the sequences apart by their restarting position ids, which a causal decoder's
        mask code reads and an encoder's does not."""
        self._check_slots_can_move("data.packing", "set data.packing=false")
        width = None
        if self.model_config.attn_implementation != "flash_attention_2":
            width = self._row_width(fused.attention_mask.sum(1).tolist(), fused.attention_mask.shape)
        rows = pack(fused, width)
        return unpack(self._hidden(rows.inputs_embeds, None, rows.position_ids), rows)

    def _shared_prefix_hidden(self, fused: FusedInputs, packed: bool) -> torch.Tensor:
        """``(B, S, H)`` hidden states from one sequence per pair (``gazerm.model.prefix_sharing``), whose
        4D mask goes to the backbone as its attention implementation takes one: boolean for sdpa,
        additive for eager (the config refuses flash_attention_2, which takes none)."""
        self._check_slots_can_move("model.pair_forward=shared", "set model.pair_forward=joint")
        padded = fused.attention_mask.shape
        rows, _ = share_prefixes(fused, (lambda sizes: self._row_width(sizes, padded)) if packed else None)
        mask = rows.attention_mask
        if self.model_config.attn_implementation == "eager":
            dtype = rows.inputs_embeds.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        return unpack(self._hidden(rows.inputs_embeds, mask, rows.position_ids), rows)

    def _row_width(self, lengths: list[int], padded: tuple[int, int]) -> int:
        """The width of the cheapest packed rows for sequences of ``lengths`` slots from a padded batch of
        ``padded`` (rows, slots): at least its rows' width. Eager attention keeps each row's scores for the
        backward, which memory plans count at the padded size: its rows hold no larger mask than the
        padded batch's, or than one sequence a row."""
        batch, length = padded
        cap = None
        if self.model_config.attn_implementation == "eager":
            cap = max(batch * length * length, len(lengths) * max(lengths) ** 2)
        return row_width(lengths, length, self.key_cost, cap)

    def _check_slots_can_move(self, option: str, fix: str) -> None:
        """Refuse to lay slots out anew (packed, shared) for a model whose outputs read where they were."""
        if is_encoder(self.transformer.config):
            raise ConfigError(
                f"{option} needs a causal decoder backbone; {self.model_config.backbone} is an encoder "
                f"({self.transformer.config.model_type}): {fix}"
            )
        if self.model_config.reads_padding:
            raise ConfigError(
                f"{option} drops padding, which model.positions=padded and model.pooling=last_slot "
                f"read: {fix}"
            )

    def _lm_logits(self, text_hidden: torch.Tensor) -> torch.Tensor:
        lm_head = self.hf_model.get_output_embeddings()
        if lm_head is None:
            raise ValueError("this reward model has no LM head: build it with lm_head=True for the LM loss")
        return lm_head(text_hidden)


# forward's arguments with a token axis, which a group's forward cuts to its longest row
_TOKEN_ALIGNED = ("input_ids", "attention_mask", "gaze", "gaze_mask")


def _rows(value: torch.Tensor | None, part: slice, length: int | None) -> torch.Tensor | None:
    """``value``'s rows ``part``, cut to ``length`` slots where it has a token axis."""
    if value is None:
        return None
    return value[part] if length is None else value[part][:, :length]


def mean_embedding(embeddings: nn.Module) -> torch.Tensor:
    """``(H,)`` the mean of an embedding matrix's rows, detached; gathered first where DeepSpeed ZeRO-3
    has partitioned it (``from_pretrained`` under ``HfDeepSpeedConfig``)."""
    weight = embeddings.weight
    with gathered(weight):
        return weight.detach().mean(0).clone()


def gathered(weight: nn.Parameter, modifier_rank: int | None = None) -> AbstractContextManager[Any]:
    """Where DeepSpeed ZeRO-3 has partitioned ``weight`` (each rank holds a ``[0]``-shaped slice), gather
    it whole for the block; ``modifier_rank`` is the rank whose writes are kept. Else a no-op."""
    if not hasattr(weight, "ds_id"):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(weight, modifier_rank=modifier_rank)


def is_encoder(config: PretrainedConfig) -> bool:
    """Masked-LM architectures (BERT, RoBERTa, DeBERTa, …) read bidirectionally and pool ``[CLS]``."""
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


NEW_PAD_TOKEN = "<PAD>"  # model.pad_token: new, the reference's own padding token


def build_tokenizer(config: ModelConfig, template: TemplateKind = "plain") -> PreTrainedTokenizerFast:
    """The local tokenizer for ``tiny-*`` (no tokenizer set), else the hub/local one, with a pad token and
    what ``template`` (the job's ``data.template``) needs of it (``templates.prepare_tokenizer``)."""
    if config.is_tiny and config.tokenizer is None:
        local = build_local_tokenizer("bert" if config.backbone == "tiny-bert" else "llama")
        return prepare_tokenizer(template, local)
    return prepare_tokenizer(template, _hub_tokenizer(config))


def _hub_tokenizer(config: ModelConfig) -> PreTrainedTokenizerFast:
    name = config.tokenizer or config.backbone
    source = resolve_backbone(name)
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    if tokenizer.pad_token is None and config.pad_token == "new":
        tokenizer.add_special_tokens({"pad_token": NEW_PAD_TOKEN})  # build_reward_model adds its row
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {name!r} has neither pad nor eos token")
        # Llama/Mistral ship no pad token; padded slots are masked out, so reusing EOS is harmless.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_reward_model(
    config: ModelConfig, tokenizer: PreTrainedTokenizerFast, lm_head: bool = False
) -> RewardModel:
    """A trainable reward model; ``lm_head=True`` (for ``loss.lm_loss_coeff > 0``) keeps the causal LM head.

    Everything random (tiny backbone, LoRA, projector, head) is drawn from ``config.seed`` without
    touching the global RNG, so every worker builds the same model.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.is_tiny:
            backbone = _tiny_backbone(config, tokenizer, lm_head)
        else:
            backbone = load_backbone(config, config.backbone, lm_head)
        add_token_rows(backbone, len(tokenizer), config.seed)
        if config.gradient_checkpointing:
            _enable_checkpointing(backbone)
        if config.lora is not None:
            check_lora_targets(backbone, config.lora.target_modules, config.backbone)
            backbone = get_peft_model(backbone, lora_config(config.lora))
        return RewardModel(backbone, config)


def add_token_rows(model: PreTrainedModel, vocabulary: int, seed: int) -> None:
    """Grow the embedding matrix to a tokenizer that added tokens (``model.pad_token: new``), the new rows
    drawn N(0, initializer_range) as transformers 4.40 drew them (the reference), not from the mean of
    the old rows as transformers does now. Drawn from ``seed`` alone, so loading a saved model whose
    backbone was not saved (LoRA on a hub backbone) draws the same frozen rows again."""
    rows = model.get_input_embeddings().num_embeddings
    if vocabulary <= rows:
        return
    model.resize_token_embeddings(vocabulary, mean_resizing=False)
    std = getattr(model.config, "initializer_range", 0.02)
    generator = torch.Generator().manual_seed(seed)
    for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
        if layer is not None:
            width = getattr(layer.weight, "ds_shape", layer.weight.shape)[1]  # ZeRO-3: the full shape
            drawn = torch.randn(vocabulary - rows, width, generator=generator) * std
            with gathered(layer.weight, modifier_rank=0), torch.no_grad():  # every rank draws the same rows
                layer.weight[rows:] = drawn.to(layer.weight)


def _enable_checkpointing(model: PreTrainedModel) -> None:
    # Non-reentrant: gradients reach LoRA layers even though the (frozen) embeddings need none.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the transformers 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
    )


@dataclass(frozen=True)
class _TinyArch:
    config_cls: type[PretrainedConfig]
    base_cls: type[PreTrainedModel]
    lm_cls: type[PreTrainedModel] | None
    init_kwargs: dict[str, Any] = field(default_factory=dict)


_TINY = {
    "tiny-llama": _TinyArch(LlamaConfig, LlamaModel, LlamaForCausalLM),
    "tiny-mistral": _TinyArch(MistralConfig, MistralModel, MistralForCausalLM),
    # The pooler would be trainable but unused; reward pooling happens in RewardModel.
    "tiny-bert": _TinyArch(BertConfig, BertModel, None, {"add_pooling_layer": False}),
}


def _model_class(config: ModelConfig, lm_head: bool) -> tuple[Any, dict[str, Any]]:
    if not config.is_tiny:
        return (AutoModelForCausalLM if lm_head else AutoModel), {}
    arch = _TINY[config.backbone]
    if lm_head and arch.lm_cls is None:
        raise ValueError(f"{config.backbone} is an encoder: the LM loss needs a causal-LM backbone")
    return (arch.lm_cls if lm_head else arch.base_cls), arch.init_kwargs


def load_backbone(config: ModelConfig, source: str | Path, lm_head: bool) -> PreTrainedModel:
    """``from_pretrained`` with the class ``config`` implies, from ``source``: a backbone name as
    ``resolve_backbone`` reads it, or a saved backbone directory (a tiny or fully fine-tuned one)."""
    check_attention(config.attn_implementation)
    model_cls, kwargs = _model_class(config, lm_head)
    resolved = resolve_backbone(str(source))
    model = model_cls.from_pretrained(
        resolved.path,
        attn_implementation=backbone_attention(config.attn_implementation),
        **kwargs,
        **quantization_kwargs(config),
    )
    if config.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        # fp32 norms and an input-gradient hook, so LoRA layers under the frozen 4-bit weights learn
        model = prepare_model_for_kbit_training(model, config.gradient_checkpointing)
    return model


def quantization_kwargs(config: ModelConfig) -> dict[str, Any]:
    """``from_pretrained``'s arguments for ``model.quantization``: the reference's 4-bit NF4 (bf16 compute,
    no double quantisation), placed whole on this worker's GPU; the other weights in ``model.precision``."""
    if config.quantization == "none":
        return {}
    if not torch.cuda.is_available():
        raise ConfigError(
            "model.quantization=nf4 needs a CUDA GPU (bitsandbytes' 4-bit kernels); none is visible to "
            "this process: train on GPU workers (run.use_gpu=true) or set model.quantization=none"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("model.quantization=nf4 needs bitsandbytes: pip install -e '.[qlora]'")
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=False,
        ),
        "device_map": {"": torch.cuda.current_device()},
        "torch_dtype": torch.float32 if config.precision == "fp32" else torch.bfloat16,
    }


def _tiny_backbone(config: ModelConfig, tokenizer: PreTrainedTokenizerFast, lm_head: bool) -> PreTrainedModel:
    tiny, arch = config.tiny, _TINY[config.backbone]
    hf_config: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": tiny.hidden_size,
        "num_hidden_layers": tiny.num_layers,
        "num_attention_heads": tiny.num_heads,
        "intermediate_size": tiny.intermediate_size,
        "max_position_embeddings": tiny.max_position_embeddings,
        # model.pad_token: new draws the pad row like any other (the reference's <PAD>), not as zeros
        "pad_token_id": None if config.pad_token == "new" else tokenizer.pad_token_id,
    }
    if arch.config_cls is not BertConfig:
        hf_config.update(
            num_key_value_heads=tiny.num_kv_heads,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    model_cls, kwargs = _model_class(config, lm_head)
    check_attention(config.attn_implementation)
    hf_config["attn_implementation"] = backbone_attention(config.attn_implementation)
    return model_cls(arch.config_cls(**hf_config), **kwargs)
