"""What the paper's two eye-tracking predictors (``fmv1``, ``fmv2``) have in common.

Both come from eyetrackpy (Lopez-Cardona et al., "Seeing Eye to AI", ICLR 2025) as bare PyTorch
state dicts (``torch.save(model.state_dict(), path)``), not as transformers checkpoints, next to a
tokenizer (and, for ``fmv2``, an encoder config) that eyetrackpy fetches from the hub. Here both parts
are local paths named by the user, and nothing is downloaded: a missing one is a
:class:`PathNotFoundError` naming it, a state dict that does not fit the architecture a
:class:`ConfigError` naming the file and the keys.

Both predictors read a text as its gazerm words (:func:`gazerm.features.base.word_spans`) joined by
single spaces, which is how their training data were tokenized (a list of corpus words); a word's
value is taken from its first sub-token, the token its training label sat on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.features.base import N_FEATURES, word_spans


def existing(path: str | Path, what: str, directory: bool) -> Path:
    """``path`` as a Path if it is an existing directory (or file); else PathNotFoundError naming it."""
    path = Path(path)
    if not (path.is_dir() if directory else path.is_file()):
        kind = "directory" if directory else "file"
        raise PathNotFoundError(f"{what} {kind} not found: {path}")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors saved in ``path``, on the CPU; ``weights_only`` so a checkpoint cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors have no common base class
        raise ConfigError(f"{path}: not a PyTorch state dict ({type(error).__name__}: {error})") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"{path}: expected a state dict (parameter name → tensor), got {type(state).__name__}"
        )
    return dict(state)


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the file and the keys."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        f"{label}: {_first(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if keys
    ]
    if problems:
        raise ConfigError(f"{path} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _first(items: Sequence[str], shown: int = 4) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def output_divisors(value: float | Sequence[float] | None, default: float | Sequence[float]) -> np.ndarray:
    """(5,) positive divisors that bring a predictor's raw outputs onto gazerm's common scale."""
    scale = np.asarray(default if value is None else value, dtype=np.float32)
    if scale.ndim > 1 or scale.size not in (1, N_FEATURES) or not (scale > 0).all():
        raise ConfigError(f"output_scale must be one positive number or {N_FEATURES}, got {value!r}")
    return np.broadcast_to(scale, (N_FEATURES,)).copy()


def floored(values: np.ndarray, clip_negative: bool) -> np.ndarray:
    """``values`` with negatives set to 0 (no reading measure is negative), or as they are: the raw
    outputs eyetrackpy and the paper's reference code pass on (``gaze.clip_negative: false``)."""
    return np.maximum(values, 0.0) if clip_negative else values


def joined_words(text: str, prefix: str = "") -> tuple[list[tuple[int, int]], str, np.ndarray]:
    """``text``'s word spans, the words joined by single spaces after ``prefix`` (what the predictor
    reads) and (n_words, 2) spans of the words in that joined string."""
    spans = word_spans(text)
    words = [text[start:end] for start, end in spans]
    lengths = np.array([len(word) for word in words], dtype=np.int64)
    starts = len(prefix) + np.cumsum(lengths + 1) - (lengths + 1)  # each word, then one space
    return spans, prefix + " ".join(words), np.stack([starts, starts + lengths], axis=1)
