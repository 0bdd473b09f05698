"""Attacks that learn: classifiers trained on the shadow models' members and non-members."""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from safecompress.io import atomic_path
from safecompress.privacy.attacks.scores import class_labels, confidence, logit_matrix, softmax
from safecompress.privacy.features import output_residual

NN_DECISION_PROBABILITY = 0.5


def nn_attack_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, 4) features: the top-3 softmax probabilities, descending, and the true-class one.

    With fewer than 3 classes the missing top-k entries are 0, the probability of no class.
    """
    probs = softmax(logits)
    top3 = np.sort(probs, axis=1)[:, ::-1][:, :3]
    top3 = np.pad(top3, ((0, 0), (0, 3 - top3.shape[1])))
    return np.column_stack([top3, confidence(probs, labels)])


def fit_nn_attack(features: np.ndarray, is_member: np.ndarray, seed: int) -> Any:
    """Shadow-trained attack classifier: standardized features into a one-hidden-layer MLP."""
    # here, not at the top: scikit-learn takes seconds to import, and only this attack needs it
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed),
    )
    return classifier.fit(features, np.asarray(is_member, dtype=bool))


def nn_member_probability(classifier: Any, features: np.ndarray) -> np.ndarray:
    """The fitted classifier's probability that each sample is a member: the `nn` score."""
    member_column = list(classifier.classes_).index(True)
    return classifier.predict_proba(features)[:, member_column]


# --- The paper's own attackers: torch modules, shadow-trained -------------------------------
#
# Both follow the SafeCompress reference code (JiePKU/MIA-SafeCompress and JiePKU/SafeCompress,
# MIA/model.py): they read the model's raw logits, unsorted, and the label as a signed one-hot
# vector (+1 at the label, -1 elsewhere). Their forward returns the membership logit (the
# reference's output before its sigmoid), so training uses the numerically stable BCE on logits
# and an adversarially trained model can use the same modules.


def signed_one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """+1 at the label, -1 elsewhere: the reference code's label encoding."""
    return 2.0 * F.one_hot(labels, n_classes).float() - 1.0


class NasrAdversary(nn.Module):
    """Black-box attacker of Nasr, Shokri and Houmansadr (CCS 2018) as in the reference code's
    `Adversary`: a logits branch C-1024-512-64, a label branch C-512-64, fused 128-256-64-1."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes
        self.shape = (n_classes,)  # the constructor's arguments, saved with the weights
        self.logits_branch = nn.Sequential(
            *(nn.Linear(n_classes, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU()),
            *(nn.Linear(512, 64), nn.ReLU()),
        )
        self.label_branch = nn.Sequential(
            *(nn.Linear(n_classes, 512), nn.ReLU(), nn.Linear(512, 64), nn.ReLU())
        )
        self.fuse = nn.Sequential(
            *(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 1))
        )
        for module in self.modules():  # the reference's initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(n,) membership logits; sigmoid gives the member probability."""
        label_code = signed_one_hot(labels, self.n_classes)
        fused = torch.cat([self.logits_branch(logits), self.label_branch(label_code)], dim=1)
        return self.fuse(fused).squeeze(1)


def _branch(n_inputs: int) -> nn.Sequential:
    """The white-box attacker's small input branch: dropout, n-128-64."""
    return nn.Sequential(nn.Dropout(0.2), nn.Linear(n_inputs, 128), nn.ReLU(), nn.Linear(128, 64))


def conv_of_outer_product(conv: nn.Conv2d, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """conv(rows[i] outer cols[i]) for a 1-channel, stride-1, same-padded conv, as an (n, 1,
    len(rows), len(cols)) map, without running a 2-D conv over the outer products.

    A k x k kernel K applied to an outer product g h^T is sum_a shift_a(g) (K[a] * h)^T: k
    1-D convs of h and one batched matrix product, some 40x cheaper on the CPU for a
    100 x 512 gradient than torch's 1-channel conv2d, with the same parameters and result.
    """
    kernel = conv.weight[0, 0]
    size = kernel.shape[0]
    pad = size // 2
    if conv.weight.shape[:2] != (1, 1) or kernel.shape != (size, size) or size % 2 == 0:
        raise ValueError(f"expected a 1-channel odd square kernel, got {tuple(conv.weight.shape)}")
    if conv.stride != (1, 1) or conv.padding != (pad, pad) or conv.dilation != (1, 1):
        raise ValueError("expected a stride-1, same-padded, undilated conv")
    filtered_cols = F.conv1d(F.pad(cols, (pad, pad)).unsqueeze(1), kernel.unsqueeze(1))
    shifted_rows = F.pad(rows, (pad, pad)).unfold(1, size, 1).transpose(1, 2)
    out = torch.einsum("nai,naj->nij", shifted_rows, filtered_cols)
    if conv.bias is not None:
        out = out + conv.bias
    return out.unsqueeze(1)


class WhiteBoxAdversary(nn.Module):
    """White-box attacker of the SafeCompress journal version (`WhiteBoxAttackModel`): branches
    for the logits, the per-sample loss, the output layer's weight gradient and the label,
    fused 256-256-128-64-1, with the reference's dropout.

    As in the reference, one 5x5 conv, BatchNorm, ReLU and a 2x2 max-pool reduce the C x d
    gradient to (C//2) x (d//2) cells before its linear layers. The gradient is the outer
    product (softmax - onehot) x features, so the conv is computed from the two factors (see
    `conv_of_outer_product`): a fit stays cheap for 100 classes x 512 features, and memory
    stays at batch x C x d. For the same reason the reference's input dropout on the gradient
    drops feature columns of it (each cell still kept with probability 0.8), not single cells.
    """

    def __init__(self, n_classes: int, n_features: int):
        super().__init__()
        self.n_classes, self.n_features = n_classes, n_features
        self.shape = (n_classes, n_features)
        self.logits_branch = _branch(n_classes)
        self.loss_branch = _branch(1)
        self.gradient_dropout = nn.Dropout(0.2)
        self.gradient_conv = nn.Conv2d(1, 1, kernel_size=5, padding=2)
        self.gradient_branch = nn.Sequential(
            *(nn.BatchNorm2d(1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2)),
            nn.Linear((n_classes // 2) * (n_features // 2), 256),
            *(nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64)),
        )
        self.label_branch = _branch(n_classes)
        self.fuse = nn.Sequential(
            *(nn.Dropout(0.2), nn.Linear(256, 256), nn.ReLU()),
            *(nn.Dropout(0.2), nn.Linear(256, 128), nn.ReLU()),
            *(nn.Dropout(0.2), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1)),
        )
        for module in self.modules():  # the reference's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """(n,) membership logits from a batch of logits, labels and penultimate features."""
        loss = F.cross_entropy(logits, labels, reduction="none").unsqueeze(1)
        gradient_map = conv_of_outer_product(
            self.gradient_conv, output_residual(logits, labels), self.gradient_dropout(features)
        )
        parts = (
            self.logits_branch(logits),
            self.loss_branch(loss),
            self.gradient_branch(gradient_map),
            self.label_branch(signed_one_hot(labels, self.n_classes)),
        )
        return self.fuse(torch.cat(parts, dim=1)).squeeze(1)


# Attacker training: Adam at the reference's lr, class-balanced BCE, and early stopping on a
# held-out, stratified fraction of the shadow data (never the target's data; the reference code
# picks the attacker's best epoch on its evaluation split). Patience and the epoch cap keep a
# fit on ~700 shadow samples within a few seconds on one core.
ATTACKER_LR = 1e-3
ATTACKER_EPOCHS = 30
ATTACKER_BATCH_SIZE = 128
ATTACKER_HOLDOUT = 0.2
ATTACKER_PATIENCE = 6


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one torch thread: the attackers are small, so one thread is about as fast as
    several, and their results do not depend on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _logits_and_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Validated float32 logits and int64 labels as tensors."""
    logits = logit_matrix(logits)
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least 2 classes, got shape {logits.shape}")
    labels = class_labels(labels, *logits.shape)
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values")
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


def _feature_matrix(features: np.ndarray, n_samples: int) -> torch.Tensor:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != n_samples:
        raise ValueError(
            f"features must be a (samples, d) array with {n_samples} rows, got shape "
            f"{features.shape}"
        )
    if features.shape[1] < 2:
        raise ValueError(f"features need d >= 2 columns (2x2 pooling), got {features.shape[1]}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    return torch.from_numpy(features)


def _membership(is_member: np.ndarray, n_samples: int) -> np.ndarray:
    is_member = np.asarray(is_member)
    if is_member.shape != (n_samples,):
        raise ValueError(f"expected {n_samples} is_member flags, got shape {is_member.shape}")
    if not np.isin(is_member, (0, 1)).all():
        raise ValueError("is_member must be boolean (True = member, False = non-member)")
    is_member = is_member.astype(bool)
    if min(is_member.sum(), (~is_member).sum()) < 2:
        raise ValueError(
            f"attacker training needs at least 2 members and 2 non-members, got "
            f"{is_member.sum()} and {(~is_member).sum()}"
        )
    return is_member


def _holdout_split(is_member: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out samples: `fraction` of each class, at least one each."""
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(is_member), dtype=bool)
    for group in (is_member, ~is_member):
        indices = rng.permutation(np.flatnonzero(group))
        n_out = min(len(indices) - 1, max(1, round(fraction * len(indices))))
        held_out[indices[:n_out]] = True
    return held_out


def _balanced_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-sample weights giving members and non-members equal total weight (mean 1)."""
    n_members = targets.sum()
    return torch.where(
        targets > 0.5,
        len(targets) / (2 * n_members),
        len(targets) / (2 * (len(targets) - n_members)),
    )


def _membership_logits(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], batch_size: int = 256
) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        chunks = zip(*(tensor.split(batch_size) for tensor in inputs), strict=True)
        return torch.cat([module(*chunk) for chunk in chunks])


def _fit_attacker(
    build: Callable[[], nn.Module],
    inputs: tuple[torch.Tensor, ...],
    is_member: np.ndarray,
    seed: int,
    epochs: int,
    batch_size: int,
) -> nn.Module:
    """Train `build()` on `inputs` -> is_member; return it at its best held-out epoch."""
    if epochs < 1 or batch_size < 2:
        raise ValueError(
            f"attacker epochs must be >= 1 and batch_size >= 2, got {epochs} and {batch_size}"
        )
    held_out = torch.from_numpy(_holdout_split(is_member, ATTACKER_HOLDOUT, seed))
    targets = torch.from_numpy(is_member).float()
    train_inputs = tuple(tensor[~held_out] for tensor in inputs)
    val_inputs = tuple(tensor[held_out] for tensor in inputs)
    train_targets, val_targets = targets[~held_out], targets[held_out]
    train_weights, val_weights = _balanced_weights(train_targets), _balanced_weights(val_targets)
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initialisation, shuffling and dropout; restored on exit
        module = build()
        # foreach: the CPU default's per-tensor loop, bit for bit, about a fifth faster
        optimizer = torch.optim.Adam(module.parameters(), lr=ATTACKER_LR, foreach=True)
        best_loss, best_state, stale = math.inf, copy.deepcopy(module.state_dict()), 0
        for _ in range(epochs):
            module.train()
            for batch in torch.randperm(len(train_targets)).split(batch_size):
                if len(batch) < 2:  # BatchNorm cannot train on a single sample
                    continue
                loss = F.binary_cross_entropy_with_logits(
                    module(*(tensor[batch] for tensor in train_inputs)),
                    train_targets[batch],
                    weight=train_weights[batch],
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            val_loss = F.binary_cross_entropy_with_logits(
                _membership_logits(module, val_inputs), val_targets, weight=val_weights
            ).item()
            if val_loss < best_loss:
                best_loss, best_state, stale = val_loss, copy.deepcopy(module.state_dict()), 0
            else:
                stale += 1
                if stale >= ATTACKER_PATIENCE:
                    break
        module.load_state_dict(best_state)
    return module.eval()


def _member_probability(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """Sigmoid in float64, where it saturates to exactly 1 only far beyond float32's range:
    fewer ties among the most member-like samples, which set the TPR at low FPR."""
    with _one_thread():
        return torch.sigmoid(_membership_logits(module, inputs).double()).numpy()


def fit_nasr(
    logits: np.ndarray,
    labels: np.ndarray,
    is_member: np.ndarray,
    seed: int,
    epochs: int = ATTACKER_EPOCHS,
    batch_size: int = ATTACKER_BATCH_SIZE,
) -> NasrAdversary:
    """The Nasr-style black-box attacker, trained on shadow logits, labels and membership."""
    logits_t, labels_t = _logits_and_labels(logits, labels)
    is_member = _membership(is_member, len(labels_t))
    n_classes = logits_t.shape[1]
    return _fit_attacker(
        lambda: NasrAdversary(n_classes), (logits_t, labels_t), is_member, seed, epochs, batch_size
    )


def nasr_member_probability(
    module: NasrAdversary, logits: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """The fitted black-box attacker's probability that each sample is a member."""
    logits_t, labels_t = _logits_and_labels(logits, labels)
    if logits_t.shape[1] != module.n_classes:
        raise ValueError(
            f"the attacker was trained on {module.n_classes} classes, logits have "
            f"{logits_t.shape[1]}"
        )
    return _member_probability(module, (logits_t, labels_t))


def fit_whitebox(
    logits: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    is_member: np.ndarray,
    seed: int,
    epochs: int = ATTACKER_EPOCHS,
    batch_size: int = ATTACKER_BATCH_SIZE,
) -> WhiteBoxAdversary:
    """The white-box attacker, trained on shadow logits, labels, penultimate features (see
    `features.penultimate_features`) and membership."""
    logits_t, labels_t = _logits_and_labels(logits, labels)
    features_t = _feature_matrix(features, len(labels_t))
    is_member = _membership(is_member, len(labels_t))
    n_classes, n_features = logits_t.shape[1], features_t.shape[1]
    return _fit_attacker(
        lambda: WhiteBoxAdversary(n_classes, n_features),
        (logits_t, labels_t, features_t),
        is_member,
        seed,
        epochs,
        batch_size,
    )


def whitebox_member_probability(
    module: WhiteBoxAdversary, logits: np.ndarray, labels: np.ndarray, features: np.ndarray
) -> np.ndarray:
    """The fitted white-box attacker's probability that each sample is a member."""
    logits_t, labels_t = _logits_and_labels(logits, labels)
    features_t = _feature_matrix(features, len(labels_t))
    if (logits_t.shape[1], features_t.shape[1]) != (module.n_classes, module.n_features):
        raise ValueError(
            f"the attacker was trained on {module.n_classes} classes and {module.n_features} "
            f"features, got {logits_t.shape[1]} and {features_t.shape[1]}"
        )
    return _member_probability(module, (logits_t, labels_t, features_t))


ADVERSARIES: dict[str, type[NasrAdversary] | type[WhiteBoxAdversary]] = {
    "nasr": NasrAdversary,
    "whitebox": WhiteBoxAdversary,
}


def save_adversary(module: NasrAdversary | WhiteBoxAdversary, path: str | os.PathLike) -> None:
    """Write a fitted adversary as safetensors (tensors only: reading it runs no code), with
    its kind and shape in the header."""
    kind = next(name for name, cls in ADVERSARIES.items() if type(module) is cls)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    header = {"adversary": json.dumps({"kind": kind, "shape": list(module.shape)})}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=header)


def load_adversary(path: str | os.PathLike) -> tuple[str, NasrAdversary | WhiteBoxAdversary]:
    """(kind, module in eval mode) of an adversary written by `save_adversary`."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            header = json.loads(handle.metadata()["adversary"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        kind = header["kind"]
        module = ADVERSARIES[kind](*header["shape"])
        module.load_state_dict(tensors)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such adversary; rerun the rule that fits it") from err
    except (safetensors.SafetensorError, KeyError, TypeError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"{path}: not a readable fitted adversary ({err}); delete it and rerun"
        ) from err
    return kind, module.eval()
