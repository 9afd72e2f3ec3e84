"""Early stopping (ASHA) that never cuts a trial off while it exports its model."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler

from gazerm.tune.space import AshaSettings


class FinishingASHA(ASHAScheduler):
    """ASHA over training steps, ignoring each trial's final report.

    The final report comes from a job that has trained to the end and is now publishing its model
    and closing its MLflow run; a STOP then (a rung at the last step, or ``max_t``) would kill the
    trial half-way through that and leave the best trial without a model.
    """

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get("final"):
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def asha(settings: AshaSettings) -> FinishingASHA:
    return FinishingASHA(
        time_attr="step",
        max_t=settings.max_t,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
    )
