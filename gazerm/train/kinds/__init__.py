"""The loss kinds, one object each (``base.LossKind``): a new kind is a module here plus its entry in
``KINDS`` and in ``gazerm.model.config.LossKindName``."""

from __future__ import annotations

from gazerm.model.config import LossKindName
from gazerm.train.kinds.base import LossKind
from gazerm.train.kinds.listwise import Listwise
from gazerm.train.kinds.pairwise import Pairwise
from gazerm.train.kinds.regression import Regression

__all__ = ["KINDS", "LossKind", "loss_kind"]

KINDS: dict[str, LossKind] = {kind.name: kind for kind in (Pairwise(), Regression(), Listwise())}


def loss_kind(name: LossKindName) -> LossKind:
    return KINDS[name]
