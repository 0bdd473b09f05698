"""Reference-model attacks, offline: LiRA (Carlini et al., S&P 2022) and RMIA (Zarifzadeh,
Liu, Jagielski, Shokri, ICML 2024).

Offline means the attacker's reference models never trained on the evaluated samples: every
reference is OUT for every sample, so both attacks test "x is a member" against what models
that did not see x do on x. They calibrate per sample, which the threshold attacks cannot: a
sample that every model finds easy is not flagged for being easy.
"""

from __future__ import annotations

import numpy as np

from safecompress.privacy.attacks.scores import LOG_FLOOR, class_labels, logit_matrix
from safecompress.privacy.metrics import roc_auc

# LiRA estimates one variance for all samples below this many OUT references: with few shadow
# models Carlini et al. recommend a global variance over noisy per-example ones, and LeakPro,
# citing them, switches to per-example variances at 32 OUT models (64 shadow models online).
LIRA_PER_SAMPLE_VARIANCE_FROM = 32
# Keeps LiRA's z-score finite when every reference gives a sample the very same phi.
LIRA_MIN_STD = 1e-8
# RMIA defaults of Privacy Meter (modules/mia/attacks/rmia.py): gamma = 1, and a = 0.3 when
# it is not tuned on a paired reference model.
RMIA_GAMMA = 1.0
RMIA_OFFLINE_A = 0.3
# The values of a that the tuning tries, as the RMIA paper's grid search over [0, 1].
RMIA_A_GRID = tuple(round(a, 1) for a in np.linspace(0.0, 1.0, 11))


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic phi = log(p_y / (1 - p_y)), from the logits without forming p_y.

    phi = z_y - logsumexp_{j != y} z_j, exact where p_y rounds to 1 (a memorised sample) and
    1 - p_y would be 0. LiRA models phi, not p_y, as Gaussian: the logit scaling makes the
    confidence's distribution over models close to normal.
    """
    logits = logit_matrix(logits)
    if logits.shape[1] < 2:
        raise ValueError(f"phi needs at least 2 classes, got {logits.shape[1]}")
    import scipy.special  # on first use: the steps that train import this package too

    labels = class_labels(labels, *logits.shape)
    is_true_class = np.arange(logits.shape[1]) == labels[:, None]
    true_logit = logits[np.arange(len(labels)), labels]
    other_classes = np.where(is_true_class, -np.inf, logits)
    return true_logit - scipy.special.logsumexp(other_classes, axis=1)


def lira_offline(
    target_logits: np.ndarray,
    target_labels: np.ndarray,
    reference_logits: np.ndarray,
    fix_variance: bool = False,
) -> np.ndarray:
    """Offline LiRA score of each sample: log Pr[Z < phi_target], Z ~ N(mu_out, sigma_out^2).

    Carlini et al.'s offline variant fits only the OUT Gaussian and tests one-sidedly,
    Lambda = 1 - Pr[Z > phi_target]: a member's phi lies above what OUT models give. The score
    is log Lambda (higher = more member-like; the log keeps the ranking where Lambda rounds
    to 0, and scipy's log-CDF stays exact where it rounds to 1).

    mu_out is each sample's mean phi over the K references. sigma_out is each sample's
    standard deviation (ddof 1) when K >= LIRA_PER_SAMPLE_VARIANCE_FROM and not
    `fix_variance`; else one pooled within-sample standard deviation for all samples, with
    which the ranking is that of phi - mu_out.

    target_logits: (n, C); target_labels: (n,); reference_logits: (K, n, C), the K reference
    models' logits on the same samples.
    """
    target_logits = logit_matrix(target_logits)
    phi = logit_scaled_confidence(target_logits, target_labels)
    reference_logits = np.asarray(reference_logits, dtype=np.float64)
    if reference_logits.ndim != 3 or reference_logits.shape[1:] != target_logits.shape:
        raise ValueError(
            f"reference_logits must have shape (references, {target_logits.shape[0]}, "
            f"{target_logits.shape[1]}), got {reference_logits.shape}"
        )
    n_references = len(reference_logits)
    if n_references < 2:
        raise ValueError(f"LiRA needs 2 or more references for a variance, got {n_references}")
    reference_phi = np.stack(
        [logit_scaled_confidence(logits, target_labels) for logits in reference_logits]
    )
    mean = reference_phi.mean(axis=0)
    variance = reference_phi.var(axis=0, ddof=1)
    if fix_variance or n_references < LIRA_PER_SAMPLE_VARIANCE_FROM:
        variance = np.full_like(variance, variance.mean())
    std = np.maximum(np.sqrt(variance), LIRA_MIN_STD)
    import scipy.special

    return scipy.special.log_ndtr((phi - mean) / std)  # the standard normal's log-CDF


def rmia_offline(
    target_probs_x: np.ndarray,
    ref_probs_x: np.ndarray,
    target_probs_z: np.ndarray,
    ref_probs_z: np.ndarray,
    gamma: float = RMIA_GAMMA,
    offline_a: float = RMIA_OFFLINE_A,
) -> np.ndarray:
    """Offline RMIA score of each sample x: the share of population samples z it dominates.

    Zarifzadeh et al.: LR(x, z) = [Pr(x|theta) / Pr(x)] / [Pr(z|theta) / Pr(z)], and
    score(x) = fraction of z with LR(x, z) > gamma (the paper writes >= gamma; Privacy Meter's
    strict > is used, the two differ only on exact ties). Pr(.|theta) is a model's
    true-class probability; Pr(.) averages it over reference models, here the K OUT
    references, corrected offline for the missing IN models as
    Pr = ((1 + a) Pr_OUT + (1 - a)) / 2. Dividing by Pr(x) calibrates x's difficulty; comparing
    with population samples z calibrates the target model's overall confidence.

    target_probs_x: (n,) target's true-class probability of each evaluated sample;
    ref_probs_x: (K, n) the references'; target_probs_z (m,) and ref_probs_z (K, m): the same
    for m population samples that neither the target nor any reference trained on.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    if not 0 <= offline_a <= 1:
        raise ValueError(f"offline_a must lie in [0, 1], got {offline_a}")
    ratio_x = _probability_ratio(target_probs_x, ref_probs_x, offline_a, "x")
    ratio_z = np.sort(_probability_ratio(target_probs_z, ref_probs_z, offline_a, "z"))
    if np.shape(ref_probs_x)[0] != np.shape(ref_probs_z)[0]:
        raise ValueError(
            f"x and z must be scored by the same references, got {np.shape(ref_probs_x)[0]} and "
            f"{np.shape(ref_probs_z)[0]}"
        )
    # ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma, ratios being positive.
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)


def tune_rmia_offline_a(
    probs: np.ndarray,
    is_member: np.ndarray,
    is_population: np.ndarray,
    gamma: float = RMIA_GAMMA,
    grid: tuple[float, ...] = RMIA_A_GRID,
) -> tuple[float, np.ndarray]:
    """RMIA's offline a, set as Zarifzadeh et al. set it: on reference models, whose members are
    known. Each reference j in turn plays the target, attacked by offline RMIA with the other
    references that did not train on a sample as its OUT models, over its own members and
    non-members outside the population and against the population; the a of the highest AUC
    averaged over the j (the smallest a of a tie) is returned with that mean AUC per grid value.

    probs: (K, n) each reference's true-class probability on n samples of the attacker's pool,
    NaN where it has no signal (a matched reference's own held-out data); is_member: (K, n)
    whether reference k trained on sample i; is_population: (n,) RMIA's population, which no
    reference trained on and every reference scored. Where no reference can be so attacked (one
    reference; no members or no non-members of any that another is OUT on), Privacy Meter's
    untuned a (RMIA_OFFLINE_A) is returned, with no AUC.
    """
    probs = np.asarray(probs, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    is_population = np.asarray(is_population, dtype=bool)
    if probs.ndim != 2 or is_member.shape != probs.shape or is_population.shape != probs.shape[1:]:
        raise ValueError(
            f"probs and is_member must be (references, samples) and is_population (samples,); "
            f"got {probs.shape}, {is_member.shape}, {is_population.shape}"
        )
    scored = ~np.isnan(probs)
    if (is_member & is_population).any() or not scored[:, is_population].all():
        raise ValueError("every reference must score RMIA's population and none train on it")
    aucs = []
    for j in range(len(probs)):
        others = np.arange(len(probs)) != j
        out = scored[others] & ~is_member[others]
        n_out = out.sum(axis=0)
        total = np.where(out, probs[others], 0.0).sum(axis=0)
        mean_out = np.divide(total, n_out, out=np.zeros(n_out.shape), where=n_out > 0)
        x = scored[j] & ~is_population & (n_out > 0)
        if is_member[j, x].all() or not is_member[j, x].any():
            continue  # no members or no non-members of j that another reference is OUT on
        aucs.append(
            [
                roc_auc(
                    is_member[j, x],
                    rmia_offline(
                        probs[j, x],
                        mean_out[None, x],
                        probs[j, is_population],
                        mean_out[None, is_population],
                        gamma,
                        a,
                    ),
                )
                for a in grid
            ]
        )
    if not aucs:
        return RMIA_OFFLINE_A, np.full(len(grid), np.nan)
    mean_auc = np.mean(aucs, axis=0)
    return float(grid[int(np.argmax(mean_auc))]), mean_auc


def _probability_ratio(
    target_probs: np.ndarray, ref_probs: np.ndarray, offline_a: float, name: str
) -> np.ndarray:
    """Pr(s|theta) / Pr(s), with Pr(s) the offline-corrected mean over the OUT references."""
    target_probs = np.asarray(target_probs, dtype=np.float64)
    ref_probs = np.asarray(ref_probs, dtype=np.float64)
    if target_probs.ndim != 1 or len(target_probs) == 0:
        raise ValueError(f"target_probs_{name} must be a non-empty 1-D array")
    if ref_probs.ndim != 2 or ref_probs.shape[1] != len(target_probs) or len(ref_probs) == 0:
        raise ValueError(
            f"ref_probs_{name} must have shape (references, {len(target_probs)}), "
            f"got {ref_probs.shape}"
        )
    for label, probs in ((f"target_probs_{name}", target_probs), (f"ref_probs_{name}", ref_probs)):
        if not ((probs >= 0) & (probs <= 1)).all():
            raise ValueError(f"{label} must be probabilities in [0, 1]")
    marginal = ((1 + offline_a) * ref_probs.mean(axis=0) + (1 - offline_a)) / 2
    return target_probs / np.maximum(marginal, LOG_FLOOR)
