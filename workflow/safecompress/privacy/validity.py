"""Does the safety test predict the judge? SafeCompress's candidates, each scored by the
defender's safety test during training, attacked afterwards by the evaluation's own attacks.

The compress job logs every tested candidate's logits on the evaluated samples and RMIA's
population (`safecompress.log_candidates`); here each candidate becomes a target of the
evaluation's attack code (`attacks.run_attacks`), calibrated on the same reference models as
the final model's attack, and gets the evaluation's AUC and TPR at 1 % FPR.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from safecompress.privacy import attacks
from safecompress.privacy.metrics import TPR_AT_FPR, roc_auc, tpr_at_fpr
from safecompress.privacy.signals import (
    POPULATION,
    aligned_queries,
    population,
    rmia_calibration,
)

# The evaluation's attacks each candidate is judged by: the loss attack (what the safety test
# simulates) and the reference-model attacks that calibrate per sample.
VALIDITY_ATTACKS = ("loss", "lira", "rmia")
# What each candidate is judged on: AUC and the low-FPR number of the paper table.
VALIDITY_METRICS = ("auc", "tpr_at_1pct_fpr")
# The membership of the logged samples, by their set in the split (the rest: RMIA's population).
ROLES = {"target_train": "member", "target_out": "non-member"}


def candidate_table(
    index: np.ndarray,
    logits: np.ndarray,
    split: pd.DataFrame,
    shadow: pd.DataFrame,
    queries: Sequence[pd.DataFrame],
    attack_names: Sequence[str],
    seed: int,
) -> pd.DataFrame:
    """One row per logged candidate (`row`: its position in `logits`, i.e. in updates.csv) and
    attack: the evaluation's `auc` and `tpr_at_1pct_fpr` of that candidate.

    index: (n,) pool indices of the logged samples; logits: (rows, n, C); split: the split
    table; shadow, queries: what the references saved (`signals.read_shadows`)."""
    sets = split.set_index("index")["set"].reindex(index)
    role = sets.map(ROLES).fillna(POPULATION).to_numpy()
    known = pd.concat([frame[["index", "label"]] for frame in (*queries, shadow)])
    labels = known.drop_duplicates("index").set_index("index")["label"].reindex(index)
    if labels.isna().any():
        raise ValueError("the references saved no label for some logged samples")
    frame = pd.DataFrame({"index": index, "set": role, "label": labels.to_numpy()})
    evaluated = role != POPULATION
    references = aligned_queries(queries, frame[evaluated])
    shadow_signals = attacks.read_signals(shadow, "shadow")
    calibration = rmia_calibration(index[~evaluated], shadow)  # the same for every candidate
    rows = []
    for row, candidate in enumerate(logits):
        table = frame.assign(**{f"logit_{c}": candidate[:, c] for c in range(candidate.shape[1])})
        target = attacks.read_signals(table[evaluated], f"candidate {row}")
        inputs = attacks.AttackInputs(
            target=target,
            shadow=shadow_signals,
            references=references,
            population=population(table[~evaluated], calibration),
        )
        for attack, (score, _) in attacks.run_attacks(inputs, attack_names, seed).items():
            metric = "tpr_at_1pct_fpr"
            rows.append(
                {
                    "row": row,
                    "attack": attack,
                    "auc": roc_auc(target.is_member, score),
                    metric: tpr_at_fpr(target.is_member, score, TPR_AT_FPR[metric]),
                }
            )
    return pd.DataFrame(rows, columns=["row", "attack", *VALIDITY_METRICS])
