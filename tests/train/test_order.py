"""The seeded training order: per-epoch shuffles, equal rank shares, and micro-batch-exact resumption."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from gazerm.model.config import ModelConfig
from gazerm.model.reward_model import build_tokenizer
from gazerm.train.collate import CollatedWindow
from gazerm.train.order import Block, EpochPlan, RankStream, dealt, list_blocks, prefetched
from tests.train.helpers import loss_spec, make_collator

MICRO_BATCH, WINDOW = 2, 2


def plan_of(
    blocks: list[Block], world_size: int = 2, seed: int = 7, shuffle_buffer: int = 8, balance: bool = False
) -> EpochPlan:
    return EpochPlan(tuple(blocks), seed, world_size, shuffle_buffer, balance)


def stream(plan: EpochPlan, rank: int = 0) -> RankStream:
    collator = make_collator(build_tokenizer(ModelConfig()), 64, MICRO_BATCH, bucket_window=WINDOW)
    return RankStream(plan, rank, collator)


def unit_ids(plan: EpochPlan, epoch: int, rank: int) -> list[str]:
    """The units (example id + chosen text) a rank trains on in an epoch, in order."""
    ranks_stream = stream(plan, rank)
    hands = [ranks_stream.hand(window).columns for window in ranks_stream.windows(epoch)]
    return [
        f"{example}|{text}"
        for hand in hands
        for example, text in zip(hand["example_id"], hand["chosen_text"], strict=True)
    ]


def micro_batch_keys(micro_batches) -> list[tuple]:
    return [(tuple(m.labels.sources), tuple(m.inputs.input_ids.flatten().tolist())) for m in micro_batches]


def test_blocks_are_row_groups_with_their_unit_counts(train_paths):
    blocks = list_blocks(train_paths, loss_spec())
    assert len(blocks) == len(train_paths) >= 4
    assert all(block.units > 0 for block in blocks)


def test_epochs_differ_and_the_seed_repeats_them(train_paths):
    blocks = list_blocks(train_paths, loss_spec())
    plan = plan_of(blocks)
    first, second = unit_ids(plan, 0, 0), unit_ids(plan, 1, 0)
    assert first != second and set(first) != set(second)  # another order, and another share of units
    assert unit_ids(plan_of(blocks), 0, 0) == first  # a fresh plan with the same seed: the same order
    assert unit_ids(plan_of(blocks, seed=8), 0, 0) != first


@pytest.mark.parametrize("balance", [False, True])
def test_ranks_get_equal_disjoint_shares_covering_all_but_the_remainder(train_paths, balance):
    blocks = list_blocks(train_paths, loss_spec())
    total = sum(block.units for block in blocks)
    for world_size in (1, 2, 3):
        plan = plan_of(blocks, world_size=world_size, balance=balance)
        for epoch in (0, 1):
            shares = [unit_ids(plan, epoch, rank) for rank in range(world_size)]
            assert {len(share) for share in shares} == {total // world_size}
            seen = [unit for share in shares for unit in share]
            assert len(set(seen)) == len(seen)  # no unit on two ranks
            assert total - len(seen) == total % world_size


def test_the_shuffle_mixes_units_across_blocks(train_paths):
    """Units of one block do not stay together: the buffer (8 units here) shuffles across block bounds."""
    blocks = list_blocks(train_paths, loss_spec())
    order = unit_ids(plan_of(blocks, world_size=1, shuffle_buffer=10_000), 0, 0)
    block_order = unit_ids(plan_of(blocks, world_size=1, shuffle_buffer=1), 0, 0)
    assert sorted(order) == sorted(block_order) and order != block_order


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("stopped_after", [1, 2, 3, 5])
def test_resuming_at_any_micro_batch_gives_the_uninterrupted_sequence(train_paths, stopped_after, balance):
    """Skipping ``stopped_after`` micro-batches (within or at the end of a window) continues exactly."""
    plan = plan_of(list_blocks(train_paths, loss_spec()), balance=balance)
    uninterrupted = micro_batch_keys(stream(plan).micro_batches(1))
    assert len(uninterrupted) == -(-plan.units_per_rank // MICRO_BATCH)
    before = micro_batch_keys(stream(plan).micro_batches(1))[:stopped_after]
    after = micro_batch_keys(stream(plan).micro_batches(1, skip=stopped_after))
    assert before + after == uninterrupted


def test_dealing_gives_every_hand_as_many_rows_and_a_like_share_of_the_costly_ones():
    costs = np.array([1, 9, 2, 8, 3, 7, 4, 6, 5, 10])
    hands = [dealt(costs, 2, hand) for hand in (0, 1)]
    assert [hand.tolist() for hand in hands] == [[2, 4, 5, 7, 9], [0, 1, 3, 6, 8]]  # in window order
    assert sorted(np.concatenate(hands).tolist()) == list(range(10))
    assert [int(costs[hand].sum()) for hand in hands] == [28, 27]  # 10, 7, 6, 3, 2 against 9, 8, 5, 4, 1
    # rounds (1, 4), (7, 8), (9, 11): 4 and 1 to hands 0 and 1; 8 to hand 1 (holding 1), 7 to hand 0;
    # 11 to hand 1 (holding 9), 9 to hand 0: 20 each, where longest first, round and back gave 22 and 18
    skewed = np.array([7, 11, 4, 9, 8, 1])
    assert [dealt(skewed, 2, hand).tolist() for hand in (0, 1)] == [[0, 2, 3], [1, 4, 5]]
    three = [dealt(costs[:9], 3, hand) for hand in range(3)]
    assert [len(hand) for hand in three] == [3, 3, 3]
    assert sorted(np.concatenate(three).tolist()) == list(range(9))


def test_a_unit_costs_its_common_prefix_once_where_the_forward_shares_it():
    def unit(*sequences: list[int]) -> list[dict[str, np.ndarray]]:
        return [{"input_ids": np.array(tokens)} for tokens in sequences]

    window = CollatedWindow({}, [unit([1, 2, 3, 4], [1, 2, 5]), unit([7, 8], [7, 8]), unit([1], [2, 3])])
    assert window.tokens().tolist() == [7, 4, 3]
    assert window.tokens(shared_prefix=True).tolist() == [5, 2, 3]  # 1, 2 once; all of it once; nothing


def test_dealt_ranks_train_micro_batches_of_like_length(train_paths):
    """Where the ranks' i-th micro-batches differ in tokens, the shorter waits for the longer at every
    gradient exchange: dealing the units makes them closer in every epoch."""
    collator = make_collator(build_tokenizer(ModelConfig()), 1024, MICRO_BATCH, bucket_window=WINDOW)
    blocks = list_blocks(train_paths, loss_spec())

    def waiting(balance: bool, epoch: int) -> float:
        """The ranks' slowest micro-batch tokens over their mean, summed over the epoch's micro-batches."""
        plan = plan_of(blocks, balance=balance)
        streams = [RankStream(plan, rank, collator).micro_batches(epoch) for rank in (0, 1)]
        tokens = np.array([[int(micro.inputs.attention_mask.sum()) for micro in s] for s in streams])
        return tokens.max(axis=0).sum() / tokens.mean(axis=0).sum()

    for epoch in (0, 1, 2):
        unbalanced, balanced = waiting(False, epoch), waiting(True, epoch)
        assert balanced < 1.03 < 1.04 < unbalanced, (epoch, balanced, unbalanced)


def test_a_changed_shard_is_an_error_not_a_silently_different_order(train_paths, tmp_path: Path):
    blocks = list_blocks(train_paths, loss_spec())
    wrong = [Block(blocks[0].path, blocks[0].row_group, blocks[0].units + 1), *blocks[1:]]
    with pytest.raises(RuntimeError, match="changed under a running job"):
        list(stream(plan_of(wrong, world_size=1)).windows(0))


def test_prefetching_keeps_the_order_raises_errors_and_stops_when_closed():
    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad shard")

    stream = prefetched(failing(), depth=2)
    assert next(stream) == 1
    with pytest.raises(ValueError, match="bad shard"):
        next(stream)

    produced = []

    def endless():
        for index in range(10_000):
            produced.append(index)
            yield index

    running = set(threading.enumerate())
    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    (producer,) = [thread for thread in threading.enumerate() if thread not in running]
    stream.close()  # the trainer stops mid-epoch at its last step
    producer.join(timeout=10)
    assert not producer.is_alive()
    assert len(produced) < 10  # the producer stopped a few items ahead, not at the end
