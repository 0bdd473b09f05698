"""The compression methods, one record each: the one list the workflow's grid, the compress
step, the config schema's `methods` enum (kept equal by tests/test_config.py) and the figures'
styles come from.

Adding a method is one record here, one config section (a spec in `specs`, its keys in the
schema and `config/README.md`) and one module with its function. The function is named as
text and imported when the method runs, so reading this list needs no torch (the Snakefile
reads it) and only a running method pays for its imports (DP-SGD's Opacus takes a second).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from safecompress.config.specs import (
    AdversarialSpec,
    DistillSpec,
    DPSGDSpec,
    DSTSpec,
    MagnitudeSpec,
    MIAPruningSpec,
    RelaxLossSpec,
    SafeCompressSpec,
    ScheduleSpec,
)


@dataclass(frozen=True)
class Style:
    """How a model looks in every figure: its label, colour (Okabe-Ito and Tol's palettes,
    readable in greyscale and by colour-blind readers) and marker."""

    label: str
    color: str
    marker: str


@dataclass(frozen=True)
class Method:
    """A compression method: `run` ("module:function" under safecompress.compression) is
    called as `function(job, **sections[, dense=path])` and returns a `job.Compressed`.

    sections:   the config sections it reads besides `model` and `train`, with their specs.
    from_dense: it starts from the trained dense target (its job is given the model file).
    unselected: for a method that selects by the safety test, the method that trains as it
                does without the test: paired with it, the selection's own effect.
    """

    name: str
    run: str
    sections: dict[str, type]
    from_dense: bool
    style: Style
    paper: str
    unselected: str | None = None

    def function(self) -> Callable[..., Any]:
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(f"safecompress.compression.{module}"), name)


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "magnitude",
            "magnitude:magnitude",
            {"sparse": MagnitudeSpec},
            from_dense=True,
            style=Style("Magnitude pruning", "#E69F00", "o"),
            paper="one-shot magnitude pruning and fine-tuning (Han et al., NeurIPS 2015)",
        ),
        Method(
            "dst",
            "dst:dst",
            {"sparse": DSTSpec},
            from_dense=False,
            style=Style("DST (no safety test)", "#0072B2", "^"),
            paper="dynamic sparse training: SET (Mocanu et al. 2018), RigL (Evci et al. 2020)",
        ),
        Method(
            "safecompress",
            "safecompress:safecompress",
            {"sparse": ScheduleSpec, "safecompress": SafeCompressSpec},
            from_dense=False,
            style=Style("SafeCompress", "#D55E00", "D"),
            paper="Zhu, Wang, Han, ASE 2022 (arXiv 2208.05969)",
            unselected="dst",
        ),
        Method(
            "safecompress_adv",
            "safecompress:safecompress",
            {
                "sparse": ScheduleSpec,
                "safecompress": SafeCompressSpec,
                "adversarial": AdversarialSpec,
            },
            from_dense=False,
            style=Style("SafeCompress + adversarial (TSE)", "#CC79A7", "D"),
            paper="Zhu, Wang, Han, IEEE TSE 2024 (arXiv 2401.00996), MMIA-SafeCompress",
            unselected="dst_adv",
        ),
        Method(
            "safecompress_relaxloss",
            "safecompress:safecompress",
            {
                "sparse": ScheduleSpec,
                "safecompress": SafeCompressSpec,
                "relaxloss": RelaxLossSpec,
            },
            from_dense=False,
            style=Style("SafeCompress + RelaxLoss", "#44AA99", "D"),
            paper="this project: SafeCompress's selection around RelaxLoss's training",
            unselected="relaxloss",
        ),
        Method(
            "dst_adv",
            "dst:dst",
            {"sparse": DSTSpec, "adversarial": AdversarialSpec},
            from_dense=False,
            style=Style("DST + adversarial", "#56B4E9", "^"),
            paper="the TSE adversarial term without selection (this project's control)",
        ),
        Method(
            "advreg",
            "defenses.advreg:advreg",
            {"sparse": MagnitudeSpec, "adversarial": AdversarialSpec},
            from_dense=True,
            style=Style("AdvReg", "#009E73", "v"),
            paper="adversarial regularisation (Nasr, Shokri, Houmansadr, CCS 2018)",
        ),
        Method(
            "dpsgd",
            "defenses.dpsgd:dpsgd",
            {"sparse": ScheduleSpec, "dpsgd": DPSGDSpec},
            from_dense=False,
            style=Style("DP-SGD", "#999999", "X"),
            paper="DP-SGD (Abadi et al., CCS 2016) through Opacus",
        ),
        Method(
            "relaxloss",
            "defenses.relaxloss:relaxloss",
            {"sparse": DSTSpec, "relaxloss": RelaxLossSpec},
            from_dense=False,
            style=Style("RelaxLoss", "#332288", "*"),
            paper="RelaxLoss (Chen, Yu, Fritz, ICLR 2022)",
        ),
        Method(
            "miapruning",
            "defenses.miapruning:miapruning",
            {"sparse": MagnitudeSpec, "miapruning": MIAPruningSpec},
            from_dense=True,
            style=Style("MIA-Pruning", "#117733", "h"),
            paper="MIA-Pruning (Wang et al., IJCAI 2021, arXiv 2008.13578)",
        ),
        Method(
            "distill",
            "defenses.distill:distill",
            {"sparse": DSTSpec, "distill": DistillSpec},
            from_dense=True,
            style=Style("Distillation", "#882255", "P"),
            paper="knowledge distillation (Hinton et al. 2015; the reference code's kd_train)",
        ),
    )
}
METHODS = tuple(REGISTRY)
# The methods that select among candidates by the safety test (they read `safecompress`).
SELECTING = tuple(name for name, m in REGISTRY.items() if "safecompress" in m.sections)
# Every config section some method reads (the compress step takes each as --<section>).
METHOD_SECTIONS = tuple(sorted({name for m in REGISTRY.values() for name in m.sections}))
DENSE_STYLE = Style("Dense", "#000000", "s")
STYLES = {"dense": DENSE_STYLE, **{name: m.style for name, m in REGISTRY.items()}}
