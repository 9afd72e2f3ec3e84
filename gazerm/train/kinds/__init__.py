"""The loss kinds, one object each (``base.LossKind``): a new kind is a module here plus its entry in
``KINDS`` and in ``gazerm.model.config.LossKindName``.

A job's kind is resolved once, bound to its head's number of outputs (:meth:`LossSpec.of`), and that
object is what units, collation, the data order, metrics and the trainers are given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gazerm.model.config import LossKindName
from gazerm.train.kinds.base import LossKind
from gazerm.train.kinds.listwise import Listwise
from gazerm.train.kinds.pairwise import Pairwise
from gazerm.train.kinds.regression import Regression

if TYPE_CHECKING:
    from gazerm.train.config import TrainJobConfig

__all__ = ["KINDS", "LossKind", "LossSpec", "loss_kind"]

KINDS: dict[str, LossKind] = {kind.name: kind for kind in (Pairwise(), Regression(), Listwise())}


def loss_kind(name: LossKindName) -> LossKind:
    return KINDS[name]


@dataclass(frozen=True)
class LossSpec:
    """A loss kind with the number of outputs its units' targets have (a multi-attribute head's)."""

    kind: LossKind
    num_outputs: int = 1

    @classmethod
    def of(cls, config: TrainJobConfig) -> LossSpec:
        """The job's loss: the one place a kind is looked up by its configured name."""
        return cls(loss_kind(config.loss.kind), config.model.num_outputs)
