"""Early stopping: ASHA decides on every evaluation except a trial's final one."""

from __future__ import annotations

from types import SimpleNamespace

from gazerm.tune.scheduler import asha
from gazerm.tune.space import AshaSettings


def _report(scheduler, trial_id: str, step: int, accuracy: float, final: bool) -> str:
    trial = SimpleNamespace(trial_id=trial_id)
    scheduler.on_trial_add(None, trial)
    return scheduler.on_trial_result(
        None, trial, {"step": step, "val/accuracy": accuracy, "final": int(final)}
    )


def test_a_final_report_is_never_stopped_even_below_the_cutoff():
    scheduler = asha(AshaSettings(grace_period=4, reduction_factor=2, max_t=8))
    scheduler.set_search_properties("val/accuracy", "max")

    assert _report(scheduler, "leader", 4, 0.9, final=False) == "CONTINUE"
    assert _report(scheduler, "laggard", 4, 0.5, final=False) == "STOP"  # below the rung's median
    assert _report(scheduler, "exporting", 8, 0.1, final=True) == "CONTINUE"  # exporting its model
    assert _report(scheduler, "at-max-t", 8, 0.1, final=False) == "STOP"
