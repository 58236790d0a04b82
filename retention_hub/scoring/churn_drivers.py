"""Churn drivers: which features raised a row's churn risk, and how to say it to a CSM.

For gradient-boosted trees, Saabas path attribution (what each feature's splits added along the
row's path, vs the training average), read from the fitted trees; `churn.ChurnModel.drivers` uses it
and falls back to occlusion (the feature set to its training median) for other models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

Label = str | Callable[[float, float], str]


@dataclass(frozen=True)
class Driver:
    """One feature that raised a row's churn risk.

    `contribution` is in probability units (0.07 = 7 percentage points): the row's churn
    probability minus its probability without this feature's push in log-odds. The push is the
    feature's Saabas path attribution for gradient-boosted trees (what its splits added along the
    row's path, vs the training average) and otherwise the change when the feature is set to its
    training median (`typical`).
    """
    feature: str
    contribution: float
    value: float
    typical: float
    text: str


def tree_paths(model: Any) -> tuple[np.ndarray, ...] | None:
    """A fitted HistGradientBoostingClassifier's trees as flat node arrays, for `saabas`.

    Reads the private `_predictors` (its layout has held since scikit-learn 0.21); None for
    anything unexpected (another model, categorical splits), and drivers then use occlusion.
    A node's expected value is the count-weighted mean of its children's, from the leaves up.
    """
    fields = {"value", "count", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right",
              "is_leaf", "is_categorical"}
    trees = getattr(model, "_predictors", None)
    if not isinstance(model, HistGradientBoostingClassifier) or not trees or len(trees[0]) != 1:
        return None
    parts, roots, offset = [], [], 0
    for (tree,) in trees:
        nodes = tree.nodes
        if not fields <= set(nodes.dtype.names or ()) or nodes["is_categorical"].any():
            return None
        inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
        if (nodes["left"][inner] <= inner).any() or (nodes["right"][inner] <= inner).any():
            return None  # the bottom-up pass needs children after parents
        value, count = nodes["value"].astype(float), nodes["count"].astype(float)
        for i in inner[::-1]:
            lo, hi = nodes["left"][i], nodes["right"][i]
            value[i] = (count[lo] * value[lo] + count[hi] * value[hi]) / max(count[lo] + count[hi], 1)
        parts.append((nodes["feature_idx"].astype(np.intp), nodes["num_threshold"].astype(float),
                      nodes["missing_go_to_left"].astype(bool), nodes["left"].astype(np.intp) + offset,
                      nodes["right"].astype(np.intp) + offset, nodes["is_leaf"].astype(bool), value))
        roots.append(offset)
        offset += len(nodes)
    return tuple(np.concatenate(column) for column in zip(*parts)) + (np.array(roots),)


def saabas(paths: tuple[np.ndarray, ...], A: np.ndarray) -> np.ndarray:
    """Per row and feature, the log-odds the feature's splits added along the row's tree paths.

    Each split moves the expected score from the node's value to the child's; the step is credited
    to the split's feature (Saabas' path attribution). Row sums are the raw score minus its
    training expectation. All trees advance a level per step: the loop runs tree-depth times.
    """
    feature, threshold, missing_left, left, right, leaf, value, roots = paths
    n, n_features = A.shape
    out = np.zeros(n * n_features)
    node = np.tile(roots, (n, 1))
    row = np.repeat(np.arange(n), len(roots)).reshape(node.shape)
    active = ~leaf[node]
    while active.any():
        r, nd = row[active], node[active]
        f = feature[nd]
        x = A[r, f]
        child = np.where(np.where(np.isnan(x), missing_left[nd], x <= threshold[nd]), left[nd], right[nd])
        out += np.bincount(r * n_features + f, weights=value[child] - value[nd], minlength=n * n_features)
        node[active] = child
        active = ~leaf[node]
    return out.reshape(n, n_features)


def _fmt(v: float) -> str:
    if np.isnan(v):
        return "missing"
    return f"{v:,.0f}" if abs(v) >= 1000 or float(v).is_integer() else f"{v:.3g}"


def sentence(feature: str, value: float, typical: float, labels: Mapping[str, Label] | None) -> str:
    label = (labels or {}).get(feature, feature)
    if callable(label):
        return label(value, typical)
    if "{" in label and not np.isnan(value):
        return label.format(value=value, typical=typical, abs_value=abs(value), delta=value - typical,
                            direction="higher" if value > typical else "lower",
                            fell_rose="rose" if value > 0 else "fell")
    name = feature if "{" in label else label  # a template has no wording for "missing"
    return f"{name[:1].upper()}{name[1:]}: {_fmt(value)} (typical {_fmt(typical)})"
