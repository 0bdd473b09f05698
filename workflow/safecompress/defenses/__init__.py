"""Membership inference defenses, compared with SafeCompress at equal density.

Each is a compression method like those of `methods`: given a `methods.Job` and its own
config sections, it returns a sparse model at the job's density, its history, its update log,
its layer densities at the start, and the numbers it reports per model.

dpsgd:       DP-SGD through Opacus inside dynamic sparse training (SET regrowth); reports
             epsilon at delta = 1/n.
relaxloss:   dynamic sparse training on RelaxLoss's target-loss objective.
miapruning:  MIA-Pruning: ADMM pruning of the dense model, then retraining with fixed masks.
distill:     a sparse student trained by DST on the dense model's soft labels.

Adversarial regularisation (`advreg`) is `adversarial.AdversarialRegularizer`.
"""

from ..specs import DSTSpec, MagnitudeSpec, ScheduleSpec
from . import distill, dpsgd, miapruning, relaxloss

DEFENSES = {
    "dpsgd": dpsgd.train,
    "relaxloss": relaxloss.train,
    "miapruning": miapruning.train,
    "distill": distill.train,
}
# What each reads of the config besides `model` and `train` (as `specs.METHOD_SPECS`).
DEFENSE_SPECS: dict[str, dict[str, type]] = {
    "dpsgd": {"sparse": ScheduleSpec, "dpsgd": dpsgd.DPSGDSpec},
    "relaxloss": {"sparse": DSTSpec, "relaxloss": relaxloss.RelaxLossSpec},
    "miapruning": {"sparse": MagnitudeSpec, "miapruning": miapruning.MIAPruningSpec},
    "distill": {"sparse": DSTSpec, "distill": distill.DistillSpec},
}
# Those that also take `dense`, the trained dense model's path (as `magnitude` does).
NEED_DENSE = ("miapruning", "distill")
