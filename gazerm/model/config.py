"""Typed configs for the reward model and its loss (the job config nests them as ``model:``, ``loss:``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from gazerm.config import StrictConfig, left_to_switch
from gazerm.features.base import N_FEATURES

TINY_BACKBONES = ("tiny-llama", "tiny-mistral", "tiny-bert")

Pooling = Literal["last", "cls", "mean", "last_slot"]
FusionMode = Literal["none", "concat", "add"]
GazeLayout = Literal["gazerm", "reference"]  # gazerm.model.fusion documents both
Positions = Literal["attended", "padded"]
LossKindName = Literal["pairwise", "regression", "listwise"]  # gazerm.train.kinds: one object each
AttentionImplementation = Literal["sdpa", "flash_attention_2", "eager"]
Quantization = Literal["none", "nf4"]
Fidelity = Literal["gazerm", "reference"]
SeparatorInit = Literal["mean", "normal"]
PadToken = Literal["eos", "new"]
PairForward = Literal["joint", "separate", "shared"]
HeadKind = Literal["gazerm", "reference"]
Precision = Literal["bf16", "fp32"]
TruncationSide = Literal["left", "right"]
GazeSpread = Literal["additive", "all"]

# What ``fidelity: reference`` sets where the config leaves a field out: the paper's official code
# (peft 0.10, trl 0.9.6, transformers 4.40) read line by line; each can still be set alone.
REFERENCE_DEFAULTS = {
    "gaze_layout": "reference",
    "positions": "padded",
    "pooling": "last_slot",
    "train_gaze": False,
    "separator_init": "normal",
    "pad_token": "new",
    "pair_forward": "separate",
    "head": "reference",
    "precision": "fp32",
    "truncation_side": "right",
    "gaze_spread": "all",
}


class LoraSettings(StrictConfig):
    r: int = Field(default=8, gt=0)
    alpha: int = Field(default=16, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TinyBackbone(StrictConfig):
    """Shape of the random-init backbones (``tiny-*``) that tests and the quickstart build locally."""

    hidden_size: int = Field(default=64, gt=0)
    num_layers: int = Field(default=2, gt=0)
    num_heads: int = Field(default=4, gt=0)
    num_kv_heads: int = Field(default=2, gt=0)
    intermediate_size: int = Field(default=128, gt=0)
    max_position_embeddings: int = Field(default=1024, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyBackbone:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("tiny: num_heads must divide hidden_size and num_kv_heads must divide num_heads")
        return self


class ModelConfig(StrictConfig):
    """Backbone, gaze fusion and head of a reward model.

    ``backbone`` is ``tiny-llama``/``tiny-mistral``/``tiny-bert`` (built locally, random init from
    ``seed``), a hub name, a local transformers directory, a ``.gguf`` file or a packaged model's alias
    (``smollm2-135m-instruct``; see ``gazerm.model.backbones``). ``features_used`` flags which of the
    five gaze features (in ``gazerm.features`` order) feed the projector, as the paper's ablations.

    ``gaze_layout`` says how ``fusion`` lays gaze out (``gazerm.model.fusion``): ``gazerm`` gazes the
    response only and leaves tokens without gaze untouched; ``reference`` does what the paper's official
    code does (projector LayerNorms, gaze over prompt and response, ``<eye/>``/``</eye>`` separators around
    the concat block, every token offset under add). ``positions: padded`` and ``pooling: last_slot``
    reproduce two more traits of that code, which make a row's reward depend on how its batch is padded.

    ``fidelity: reference`` defaults every field of ``REFERENCE_DEFAULTS`` to what that code does (fields the
    config sets keep their value) and, through the job config, the run's selection and schedule
    (``gazerm.train.config.REFERENCE_RUN_DEFAULTS``); with ``data.template: reference_chat`` for what its
    tokenizer reads, that is how the paper's numbers were produced, less what the README lists.
    """

    fidelity: Fidelity = Field(
        default="gazerm",
        description="'reference': every field of REFERENCE_DEFAULTS (gaze_layout, positions, pooling, "
        "train_gaze, separator_init, pad_token, pair_forward, head, precision, truncation_side, gaze_spread) "
        "and of the job's REFERENCE_RUN_DEFAULTS (run selection, schedule horizon) not set defaults to what "
        "the paper's official code does",
    )

    backbone: str = "tiny-llama"
    tokenizer: str | None = Field(default=None, description="None: local tokenizer for tiny-*, else backbone")
    tiny: TinyBackbone = Field(default_factory=TinyBackbone)
    pooling: Pooling | None = Field(
        default=None,
        description="None: 'last' for decoders, 'cls' for encoders; 'last_slot': the padded row's last slot, "
        "padding or not (the reference code's classifier called with inputs_embeds only)",
    )
    fusion: FusionMode = "concat"
    gaze_layout: GazeLayout = Field(
        default="gazerm",
        description="'reference': the paper's official code's layout (projector LayerNorms, prompt gaze, "
        "<eye/> </eye> separators for concat, every token offset for add), trained as gazerm trains (the "
        "separators and projector too, which the official code leaves at init); no effect without fusion",
    )
    positions: Positions = Field(
        default="attended",
        description="'padded': position ids count every slot of the padded row, padding and masked gaze "
        "slots included (the reference code's position_ids=None), so text positions depend on the batch",
    )
    train_gaze: bool = Field(
        default=True,
        description="false: the gaze projector and the <eye/> </eye> separators keep their initial "
        "weights (the reference's peft SEQ_CLS model trains only LoRA and the score head)",
    )
    separator_init: SeparatorInit = Field(
        default="mean",
        description="how the reference concat layout's <eye/> </eye> start: 'mean' token embedding, or "
        "'normal' N(0, initializer_range), as new embedding rows under transformers 4.40 (the reference)",
    )
    pad_token: PadToken = Field(
        default="eos",
        description="a tokenizer without a pad token pads with: 'eos', or a 'new' <PAD> token, a new "
        "embedding row drawn N(0, initializer_range) (the reference, whose last-slot reward reads that row)",
    )
    pair_forward: PairForward = Field(
        default="joint",
        description="'joint': chosen and rejected rows run as one batch padded to its longest row; "
        "'separate': as two forwards, each padded to its own longest row (trl's RewardTrainer); 'shared': "
        "each pair as one sequence whose common prefix (the prompt) runs once, same rewards (causal "
        "decoders, sdpa or eager attention)",
    )
    head: HeadKind = Field(
        default="gazerm",
        description="'gazerm': Linear with bias, weights N(0, 1/(H+1)); 'reference': "
        "Linear(H, out, bias=False), N(0, 0.02), a transformers *ForSequenceClassification score layer",
    )
    precision: Precision = Field(
        default="bf16",
        description="what trainable and non-quantised weights train in on GPUs: 'bf16' (DeepSpeed bf16), or "
        "'fp32' (the reference: no mixed precision; NF4 weights still compute in bf16). CPUs train in fp32",
    )
    truncation_side: TruncationSide = Field(
        default="left",
        description="which end of a text longer than data.max_length goes: 'left' keeps the response's end "
        "(the token a decoder's reward is read from); 'right' cuts the end (the reference's tokenizer)",
    )
    gaze_spread: GazeSpread = Field(
        default="additive",
        description="how a word's gaze spreads over its tokens: 'additive' divides the sums (nFix, GPT, TRT) "
        "by its token count and copies FFD and fixProp; 'all' divides all five (the reference's GazeAdd)",
    )
    features_used: list[int] = Field(default_factory=lambda: [1] * N_FEATURES)
    fp_dropout: tuple[float, float] = (0.1, 0.3)
    fp_hidden: int = Field(default=128, gt=0)
    lora: LoraSettings | None = Field(default_factory=LoraSettings, description="None: full fine-tuning")
    gradient_checkpointing: bool = False
    quantization: Quantization = Field(
        default="none",
        description="'nf4': QLoRA, the frozen backbone loaded in 4-bit NF4 (bitsandbytes, CUDA GPUs only; "
        "needs lora), as the paper's reference does; LoRA and heads train in model.precision",
    )
    attn_implementation: AttentionImplementation = Field(
        default="sdpa", description="'flash_attention_2' needs flash-attn (GPU); 'eager' for debugging"
    )
    num_outputs: int = Field(default=1, ge=1, description=">1: multi-attribute regression head")
    seed: int = 0
    implicit_features: bool = Field(
        default=False,
        description="add a learned term from each response's implicit behaviour features (IFLLM-style "
        "session logs or a study's release, joined in by prepare) to its reward",
    )
    implicit_dim: int | None = Field(
        default=None,
        gt=0,
        description="length of the implicit feature vector; None: the prepared data's (its manifest names "
        "the features), which the training job fills in and the saved model keeps",
    )
    text: bool = Field(
        default=True,
        description="false: no text term, the reward is the implicit head's alone (an implicit-only "
        "baseline; needs implicit_features and fusion none)",
    )
    frozen: bool = Field(
        default=False,
        description="train the heads only: backbone (no LoRA) and gaze projector stay at their initial "
        "weights, so each response's pooled features are computed once, cached and reused by every run "
        "on the same inputs (gazerm.train.frozen); needs lora null",
    )
    init_from: str | None = Field(
        default=None,
        description="exported gazerm model dir whose weights start training (staged/domain RMs "
        "continue from a general one); its architecture must match this config",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _fidelity_defaults(cls, data: Any, handler: ModelWrapValidatorHandler[ModelConfig]) -> ModelConfig:
        """Fill what ``fidelity: reference`` implies, kept out of ``model_fields_set``: the set fields are
        then the config's own in both modes, which a dump for overrides keeps (``left_to_switch``)."""
        filled: dict[str, Any] = {}
        if isinstance(data, dict) and data.get("fidelity") == "reference":
            filled = {key: value for key, value in REFERENCE_DEFAULTS.items() if key not in data}
        config = handler({**data, **filled} if filled else data)
        config.__pydantic_fields_set__ -= filled.keys()
        return config

    @model_serializer(mode="wrap")
    def _for_overrides(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        return left_to_switch(handler(self), self, REFERENCE_DEFAULTS, info)

    @field_validator("features_used")
    @classmethod
    def _flags(cls, value: list[int]) -> list[int]:
        if len(value) != N_FEATURES or any(flag not in (0, 1) for flag in value):
            raise ValueError(f"features_used must be {N_FEATURES} flags of 0 or 1, got {value}")
        return value

    @field_validator("fp_dropout")
    @classmethod
    def _probabilities(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= p < 1 for p in value):
            raise ValueError(f"fp_dropout rates must lie in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _some_feature(self) -> ModelConfig:
        if self.fusion != "none" and not any(self.features_used):
            raise ValueError(f"fusion={self.fusion!r} needs at least one feature in features_used")
        return self

    @model_validator(mode="after")
    def _qlora(self) -> ModelConfig:
        if self.quantization == "nf4" and (self.lora is None or self.is_tiny):
            raise ValueError("model.quantization=nf4 (QLoRA) needs lora and a pretrained (non-tiny) backbone")
        return self

    @model_validator(mode="after")
    def _text_or_implicit(self) -> ModelConfig:
        if not self.text and (not self.implicit_features or self.fusion != "none"):
            raise ValueError(
                "model.text=false scores the implicit features alone: set implicit_features=true "
                "and fusion=none"
            )
        return self

    @model_validator(mode="after")
    def _shared_prefix(self) -> ModelConfig:
        if self.pair_forward != "shared":
            return self
        if why := self.slots_cannot_move():
            raise ValueError(f"pair_forward=shared {why}")
        if self.attn_implementation == "flash_attention_2":
            raise ValueError(
                "pair_forward=shared needs a 4D attention mask, which flash_attention_2 does not take"
            )
        return self

    @model_validator(mode="after")
    def _frozen(self) -> ModelConfig:
        if self.frozen and (
            self.lora is not None or self.quantization != "none" or self.reads_padding or self.init_from
        ):
            raise ValueError(
                "model.frozen=true trains the heads on cached features of an unchanged backbone: set "
                "lora=null and quantization=none, and keep positions=attended and pooling other than "
                "last_slot (features that depend on a batch's padding cannot be cached per response), and no "
                "init_from (a frozen model starts from its backbone)"
            )
        return self

    @property
    def is_tiny(self) -> bool:
        return self.backbone in TINY_BACKBONES

    @property
    def gazes_prompt(self) -> bool:
        """Whether the prompt's words carry gaze too (the reference layout), not only the response's."""
        return self.fusion != "none" and self.gaze_layout == "reference"

    def slots_cannot_move(self) -> str | None:
        """Why this model's slots cannot be laid out anew (``data.packing``, ``pair_forward: shared``), or
        None. Hub and directory encoders are found only when the model first runs (``RewardModel``)."""
        if self.backbone == "tiny-bert":
            return "needs a causal decoder backbone; tiny-bert is an encoder"
        if self.reads_padding:
            return "drops padding, which model.positions=padded and model.pooling=last_slot read"
        return None

    @property
    def reads_padding(self) -> bool:
        """Whether outputs depend on the padding slots (``positions: padded`` or ``pooling: last_slot``):
        such a model cannot run packed, where padding is dropped."""
        return self.positions == "padded" or self.pooling == "last_slot"


class LossConfig(StrictConfig):
    """``kind``: ``pairwise`` (Bradley-Terry over labelled pairs), ``regression`` (ratings) or
    ``listwise`` (Plackett-Luce over each prompt's ranked or scored list of responses).
    ``use_margin``: Bradley-Terry with the pair's score-difference margin; ``lm_loss_coeff`` > 0 adds
    next-token loss on the chosen response (pairwise only, and needs a causal-LM backbone)."""

    kind: LossKindName = "pairwise"
    use_margin: bool = False
    lm_loss_coeff: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _pairwise_extras(self) -> LossConfig:
        if self.kind != "pairwise" and (self.use_margin or self.lm_loss_coeff > 0):
            raise ValueError(f"use_margin and lm_loss_coeff apply to pairwise losses, not kind={self.kind!r}")
        return self
