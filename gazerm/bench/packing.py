"""``gazerm bench packing``: padding-free micro-batches (``data.packing``) against padded ones.

Pairs of a length-skewed set (most responses a sentence, a few many times longer, as real preference
data is) go through the trainer's own collation: windows of ``micro_batch_size × bucket_window``
units, sorted by length and cut into micro-batches. Every micro-batch holding a long response pads
all its short ones to that length. The same LoRA reward model then runs forward + backward over the
same micro-batches, padded and packed, after a warm-up. Each micro-batch's time is its best of three,
the two layouts taking turns, so a busy machine's stalls fall on neither side. Throughput counts real
(attended) tokens only, so the two figures compare directly.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import pyarrow as pa

from gazerm.data.schema import PreferenceExample, examples_to_table, pairs_from_scores
from gazerm.data.synthetic import readability_preferences
from gazerm.features.featurize import GazeFeaturizer
from gazerm.model.config import FusionMode, ModelConfig, TinyBackbone
from gazerm.model.inputs import InputSpec
from gazerm.model.pipeline import InputPipeline
from gazerm.model.reward_model import RewardModel, build_reward_model, build_tokenizer
from gazerm.train.batch import MicroBatch
from gazerm.train.collate import UnitCollator, Windows
from gazerm.train.kinds import LossSpec
from gazerm.train.kinds.pairwise import Pairwise
from gazerm.train.units import ToUnits

PAIRWISE = LossSpec(Pairwise())  # the benchmark measures the pairwise kind: the object, no name to look up

REPEATS = 3
LONG_SHARE = 0.08  # responses that are long
LONG_REPEAT = 12  # a long response is a short one's sentence this many times (~170 words)
WARMUP_MICRO_BATCHES = 2
# Big enough that the layers' compute, not Python overhead, sets the time on a CPU.
BENCH_TINY = TinyBackbone(
    hidden_size=128,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=384,
    max_position_embeddings=2048,
)


@dataclass(frozen=True)
class PackingResult:
    """Real tokens/s of the same micro-batches, padded and packed."""

    backbone: str
    micro_batches: int
    real_tokens: int
    padded_slots: int
    padded_tokens_per_s: float
    packed_tokens_per_s: float

    @property
    def ratio(self) -> float:
        return self.packed_tokens_per_s / self.padded_tokens_per_s

    def report(self) -> str:
        waste = 1 - self.real_tokens / self.padded_slots
        return (
            f"padding-free training, {self.backbone} LoRA reward model, forward + backward over "
            f"{self.micro_batches} micro-batches ({self.real_tokens:,} real tokens; padding is {waste:.0%} "
            f"of the {self.padded_slots:,} padded slots)\n"
            f"  padded: {self.padded_tokens_per_s:,.0f} real tokens/s\n"
            f"  packed: {self.packed_tokens_per_s:,.0f} real tokens/s\n"
            f"  packed/padded: {self.ratio:.2f}x"
        )


def skewed_units(pairs: int, seed: int = 0) -> pa.Table:
    """``pairs`` pairwise training units with gaze, each response long with probability ``LONG_SHARE``."""
    rng = random.Random(seed)

    def response(text: str) -> str:
        return " ".join([text] * (LONG_REPEAT if rng.random() < LONG_SHARE else 1))

    examples = [
        PreferenceExample(
            "bench",
            "bench",
            i,
            r["prompt"],
            [response(r["chosen"]), response(r["rejected"])],
            "pairwise",
            pairs_from_scores([1.0, 0.0]),
        )
        for i, r in enumerate(readability_preferences(pairs, seed=seed))
    ]
    return ToUnits(PAIRWISE)(GazeFeaturizer()(examples_to_table(examples)))


def _seconds(model: RewardModel, micro: MicroBatch, packed: bool) -> float:
    """One forward + backward, as a training step runs it (gradients dropped)."""
    start = time.perf_counter()
    model(**micro.inputs.forward_kwargs(), packed=packed).rewards.sum().backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def best_seconds(model: RewardModel, micro_batches: list[MicroBatch]) -> dict[bool, float]:
    """Padded (``False``) and packed (``True``) seconds: per micro-batch the best of ``REPEATS``, summed."""
    for micro in micro_batches[:WARMUP_MICRO_BATCHES]:
        for packed in (False, True):
            _seconds(model, micro, packed)
    best = {packed: [float("inf")] * len(micro_batches) for packed in (False, True)}
    for _ in range(REPEATS):
        for index, micro in enumerate(micro_batches):
            for packed, times in best.items():
                times[index] = min(times[index], _seconds(model, micro, packed))
    return {packed: sum(times) for packed, times in best.items()}


def bench_packing(
    pairs: int = 128,
    micro_batch_size: int = 16,
    bucket_window: int = 8,
    max_length: int = 384,
    backbone: str = "tiny-llama",
    fusion: FusionMode = "concat",
    tiny: TinyBackbone = BENCH_TINY,
) -> PackingResult:
    """Time padded against packed forward + backward of the same micro-batches, in this process
    (``tiny``: the shape of a ``tiny-*`` backbone)."""
    config = ModelConfig(backbone=backbone, tiny=tiny, fusion=fusion)
    tokenizer = build_tokenizer(config)
    inputs = InputPipeline.from_spec(InputSpec({"predictor": "reading_model"}, max_length), tokenizer, config)
    collator = UnitCollator(inputs, PAIRWISE, Windows(micro_batch_size, bucket_window))
    micro_batches = collator.collate(skewed_units(pairs))
    model = build_reward_model(config, tokenizer).eval()  # no dropout: both runs do the same work
    seconds = best_seconds(model, micro_batches)
    masks = [micro.inputs.attention_mask for micro in micro_batches]
    real = int(sum(mask.sum() for mask in masks))
    return PackingResult(
        backbone,
        len(micro_batches),
        real,
        sum(mask.numel() for mask in masks),
        real / seconds[False],
        real / seconds[True],
    )


def run_packing_benchmark(
    pairs: int, micro_batch_size: int, bucket_window: int, max_length: int, backbone: str
) -> dict[str, float | int | str]:
    """Run the benchmark, print it, return it for JSON."""
    result = bench_packing(pairs, micro_batch_size, bucket_window, max_length, backbone)
    print(result.report())
    return {**asdict(result), "ratio": result.ratio}
