"""Step 3b: fit a network attack's attacker (nasr or whitebox) on the shadow models.

    python -m safecompress.steps.fit_attackers --attack nasr \\
        --shadows results/digits/split0/shadow/0 results/digits/split0/shadow/1 --seed 0 \\
        --out results/digits/split0/attackers/seed0/nasr.safetensors

The attacker learns membership from the shadow models' signals on their own members and
non-members; nothing about a target enters. Fitted once per data set and seed, it is applied
to every target model of that seed by steps.attack (which would fit the same network itself
if not given it: same shadow models, same seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from safecompress.privacy import attacks
from safecompress.privacy.attacks.learned import save_adversary
from safecompress.privacy.signals import read_shadows
from safecompress.steps import cli


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--attack", required=True, choices=attacks.NETWORK_ATTACKS)
    cli.add_shadows(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the attacker's training")
    p.add_argument("--out", required=True, type=Path, help="fitted attacker (.safetensors)")
    args = p.parse_args(argv)

    save_adversary(fit_adversaries(args.shadows, [args.attack], args.seed)[args.attack], args.out)
    print(f"{args.attack}: fitted on {len(args.shadows)} shadow models -> {args.out}")


def fit_adversaries(
    shadows: Sequence[Path], names: Sequence[str], seed: int
) -> dict[str, nn.Module]:
    """The attacker of each named network attack, fitted on the saved signals of the shadow
    (or reference) models in `shadows`."""
    frame, features, _ = read_shadows(shadows, "whitebox" in names)
    signals = attacks.read_signals(frame, "shadow", features)
    return {name: attacks.FIT_ADVERSARY[name](signals, seed) for name in names}


if __name__ == "__main__":
    cli.run(main)
