"""The config of `onecycle advise --config RUN.yaml`: the run config `onecycle train` takes, with
two optional blocks, `range_test` (the range test advise runs, as in a range-test config;
default onecycle.advice.RANGE_TEST_DEFAULTS) and `advise` (its budget, seeds and held-out
part). The run's own schedule (smith_1cycle) is the real training advise picks a max LR for.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from onecycle.experiments.config import Number, RangeTestSpec, RunConfig, StrictModel, parse
from onecycle.experiments.loading import load_mapping


class AdviseSpec(StrictModel):
    # A fraction of the real training's iterations (train.epochs x iterations per epoch), or a
    # number of iterations; `onecycle advise --budget / --budget-iterations` set them too.
    budget: Number | None = Field(default=None, gt=0.0)
    budget_iterations: int | None = Field(default=None, gt=0)
    # One range test per seed: its batch order (the model's initial weights are the run's own).
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    # The fraction of the training images held out to score the range tests and trials on.
    holdout: Number = Field(default=0.2, gt=0.0, lt=1.0)
    # Points of the log grid (steps of 2) tried below the lowest and above the highest suggestion.
    grid_points: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _one_budget(self) -> AdviseSpec:
        if self.budget is not None and self.budget_iterations is not None:
            raise ValueError("give budget or budget_iterations, not both")
        return self


class AdviseConfig(RunConfig):
    """A run config, and how to advise on its max LR (`onecycle advise`)."""

    range_test: RangeTestSpec | None = None
    advise: AdviseSpec = AdviseSpec()

    @model_validator(mode="after")
    def _an_lr_ramp(self) -> AdviseConfig:
        if self.range_test is not None and self.range_test.end_lr == self.range_test.start_lr:
            raise ValueError("range_test: advise needs an LR ramp (end_lr above start_lr); a momentum range "
                             "test suggests no max LR")
        if self.schedule.policy != "smith_1cycle":
            raise ValueError(f"schedule.policy {self.schedule.policy!r}: advise picks the max LR of "
                             "smith_1cycle (Smith's 1cycle); set that policy")
        return self


def load_advise_config(path: str | Path) -> AdviseConfig:
    return parse(AdviseConfig, load_mapping(path), str(path))
