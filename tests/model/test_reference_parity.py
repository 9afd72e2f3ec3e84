"""gazerm's ``fidelity: reference`` against numbers the paper's own code produced (GazeConcat, fmv2 slots).

``fixtures/reference_parity_concat_fmv2.npz`` was written by ``benchmarks/reference_parity.py --fixture``
under the reference's pinned stack (transformers 4.40, peft 0.10, trl 0.9.6): what the reference drew
(``init/…``: its <PAD> and <eye/> rows, projector, score head, LoRA), its rewards and its LoRA and head
weights after one SGD step, on the tiny Llama that script draws from the stored seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.reference_parity import Case, case_inputs, gazerm_model, gazerm_side, write_backbone

FIXTURE = Path(__file__).parent / "fixtures" / "reference_parity_concat_fmv2.npz"


@pytest.fixture(scope="module")
def parity(tmp_path_factory) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(FIXTURE) as stored:
        reference = dict(stored)
    seed = int(reference["seed"])
    backbone = tmp_path_factory.mktemp("backbone")
    write_backbone(backbone, seed)
    case = Case("concat", 2)
    inputs = case_inputs(case, gazerm_model(case, backbone)[1], seed)
    drawn = {key.removeprefix("init/"): value for key, value in reference.items() if key.startswith("init/")}
    return reference, gazerm_side(case, backbone, inputs, drawn)


def test_reference_mode_scores_rows_as_the_reference_code_does(parity):
    reference, ours = parity
    assert reference["rewards"].shape == (4,)  # two pairs: chosen rows, then rejected rows
    np.testing.assert_allclose(ours["rewards"], reference["rewards"], rtol=0, atol=1e-5)


def test_one_step_in_reference_mode_updates_lora_and_head_as_the_reference_and_not_the_projector(parity):
    reference, ours = parity
    stepped = [key for key in reference if key.startswith("stepped/")]
    assert "stepped/score" in stepped and any(".B" in key for key in stepped)
    for key in stepped:
        np.testing.assert_allclose(ours[key], reference[key], rtol=0, atol=1e-5, err_msg=key)
    # gazerm's projector after its step is still the one it was built with (the reference's, copied in)
    assert np.array_equal(ours["projector"], reference["projector"])
