"""DeepSpeed's start in a training worker: nothing compiled, nothing probed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gazerm.train.deepspeed_config import skip_compiled_ops


def test_deepspeed_builds_no_shared_memory_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Without the skip, DeepSpeed's communication backend compiles this C++ kernel into the torch
    extensions directory on a fresh machine (minutes on 2 cores) and probes every op on each start."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    import deepspeed.ops
    from deepspeed.comm.torch import build_shm_op

    monkeypatch.setattr(deepspeed.ops, "__compatible_ops__", None, raising=False)  # undone after the test
    skip_compiled_ops()
    assert build_shm_op() is None
    assert not (tmp_path / "extensions").exists()
