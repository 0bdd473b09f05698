"""Adversarial regularisation (Nasr, Shokri, Houmansadr, CCS 2018) as a compress-then-defend
baseline: magnitude pruning of the dense model, fine-tuned against the black-box attacker."""

from __future__ import annotations

import dataclasses

from safecompress.compression.adversarial import regularizer_for
from safecompress.compression.job import Compressed, Job
from safecompress.compression.magnitude import magnitude
from safecompress.config.specs import AdversarialSpec, MagnitudeSpec


def advreg(job: Job, sparse: MagnitudeSpec, adversarial: AdversarialSpec, dense: str) -> Compressed:
    """Magnitude pruning of `dense`, fine-tuned with adversarial regularisation (AdvReg's
    inference model is the black-box one: `adversarial.attackers` is ignored)."""
    nasr_only = dataclasses.replace(adversarial, attackers=("nasr",))
    return magnitude(
        job, sparse, dense, lambda model, steps: regularizer_for(job, nasr_only, model, steps)
    )
