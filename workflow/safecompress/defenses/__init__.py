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

from . import distill, dpsgd, miapruning, relaxloss

DEFENSES = {
    "dpsgd": dpsgd.train,
    "relaxloss": relaxloss.train,
    "miapruning": miapruning.train,
    "distill": distill.train,
}
