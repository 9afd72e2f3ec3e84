"""``gazerm bench packing``: a micro-batch's layouts against the padded one: padding-free
(``data.packing``), each pair's prompt computed once (``model.pair_forward: shared``), and both.

Pairs of a length-skewed set (most responses a sentence, a few many times longer, as real preference
data is), or the pairs of a preference file, go through the trainer's own collation: windows of
``micro_batch_size × bucket_window`` units, sorted by length and cut into micro-batches. Every
micro-batch holding a long response pads all its short ones to that length. The same LoRA reward model
then runs forward + backward over the same micro-batches in every layout, after a warm-up. Each
micro-batch's time is its best of three, the layouts taking turns, so a busy machine's stalls fall on
none of them. Throughput counts real (attended) tokens of both sides only (a shared prompt counts
twice), so the figures compare directly.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import asdict, dataclass

import pyarrow as pa

from gazerm.bench.pairs import pairwise_examples, report_invalid
from gazerm.data.errors import DataError
from gazerm.data.schema import PreferenceExample, examples_to_table, pairs_from_scores
from gazerm.data.synthetic import readability_preferences
from gazerm.errors import ConfigError
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


# ``RewardModel.forward``'s options of each layout, the padded one (the baseline) first
LAYOUTS: dict[str, dict[str, bool]] = {
    "padded": {},
    "packed": {"packed": True},
    "shared": {"shared_prefix": True},
    "shared+packed": {"shared_prefix": True, "packed": True},
}


@dataclass(frozen=True)
class PackingResult:
    """Real tokens/s of the same micro-batches in each layout."""

    backbone: str
    fusion: str
    micro_batches: int
    real_tokens: int
    padded_slots: int
    tokens_per_s: dict[str, float]

    def ratio(self, layout: str) -> float:
        return self.tokens_per_s[layout] / self.tokens_per_s["padded"]

    def report(self) -> str:
        waste = 1 - self.real_tokens / self.padded_slots
        lines = [
            f"{self.backbone} LoRA reward model (fusion {self.fusion}), forward + backward over "
            f"{self.micro_batches} micro-batches ({self.real_tokens:,} real tokens; padding is {waste:.0%} "
            f"of the {self.padded_slots:,} padded slots)"
        ]
        for layout, rate in self.tokens_per_s.items():
            lines.append(f"  {layout}: {rate:,.0f} real tokens/s, {self.ratio(layout):.2f}x padded")
        return "\n".join(lines)


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


def file_units(path: str, data_format: str, pairs: int) -> pa.Table:
    """The first ``pairs`` pairwise examples of a preference file (with their conversations) as training
    units, gaze from the reading model; its invalid rows are left out (the first is printed)."""
    invalid: list[DataError] = []
    examples = list(itertools.islice(pairwise_examples(data_format, path, invalid), pairs))
    report_invalid(invalid)
    if not examples:
        raise ConfigError(f"{path}: no pairwise examples to benchmark (--format {data_format})")
    return ToUnits(PAIRWISE)(GazeFeaturizer()(examples_to_table(examples)))


def _seconds(model: RewardModel, micro: MicroBatch, layout: str) -> float:
    """One forward + backward in ``layout``, as a training step runs it (gradients dropped)."""
    start = time.perf_counter()
    model(**micro.inputs.forward_kwargs(), **LAYOUTS[layout]).rewards.sum().backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def best_seconds(model: RewardModel, micro_batches: list[MicroBatch]) -> dict[str, float]:
    """Each layout's seconds: per micro-batch the best of ``REPEATS``, summed."""
    for micro in micro_batches[:WARMUP_MICRO_BATCHES]:
        for layout in LAYOUTS:
            _seconds(model, micro, layout)
    best = {layout: [float("inf")] * len(micro_batches) for layout in LAYOUTS}
    for _ in range(REPEATS):
        for index, micro in enumerate(micro_batches):
            for layout, times in best.items():
                times[index] = min(times[index], _seconds(model, micro, layout))
    return {layout: sum(times) for layout, times in best.items()}


def bench_packing(
    pairs: int = 128,
    micro_batch_size: int = 16,
    bucket_window: int = 8,
    max_length: int = 384,
    backbone: str = "tiny-llama",
    fusion: FusionMode = "concat",
    tiny: TinyBackbone = BENCH_TINY,
    data: tuple[str, str] | None = None,
) -> PackingResult:
    """Time every layout's forward + backward of the same micro-batches, in this process (``tiny``: the
    shape of a ``tiny-*`` backbone; ``data``: a preference file and its format, else the skewed set)."""
    config = ModelConfig(backbone=backbone, tiny=tiny, fusion=fusion)
    tokenizer = build_tokenizer(config)
    inputs = InputPipeline.from_spec(InputSpec({"predictor": "reading_model"}, max_length), tokenizer, config)
    collator = UnitCollator(inputs, PAIRWISE, Windows(micro_batch_size, bucket_window))
    units = file_units(*data, pairs) if data else skewed_units(pairs)
    micro_batches = collator.collate(units)
    model = build_reward_model(config, tokenizer).eval()  # no dropout: every layout does the same work
    seconds = best_seconds(model, micro_batches)
    masks = [micro.inputs.attention_mask for micro in micro_batches]
    real = int(sum(mask.sum() for mask in masks))
    rates = {layout: real / taken for layout, taken in seconds.items()}
    return PackingResult(
        backbone, fusion, len(micro_batches), real, sum(mask.numel() for mask in masks), rates
    )


def run_packing_benchmark(
    pairs: int,
    micro_batch_size: int,
    bucket_window: int,
    max_length: int,
    backbone: str,
    fusion: FusionMode,
    data: tuple[str, str] | None,
) -> dict[str, object]:
    """Run the benchmark, print it, return it for JSON."""
    result = bench_packing(pairs, micro_batch_size, bucket_window, max_length, backbone, fusion, data=data)
    print(result.report())
    return {**asdict(result), "ratios": {layout: result.ratio(layout) for layout in LAYOUTS}}
