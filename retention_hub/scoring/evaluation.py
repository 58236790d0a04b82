"""Model report: how well churn probabilities rank and how honest they are, overall and per segment.

`evaluate` returns plain dicts (JSON-ready: floats, ints, None, str, lists) so the CLI, the HTML
report and the model file can all hold the same thing. Metrics come from `sklearn.metrics`; the
only things computed here are the calibration table (equal-frequency bins), the expected
calibration error read off that table, and the top-decile lift.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

TOP_SHARE = 0.10  # "top decile" for lift


def evaluate(y_true: Any, proba: Any, segments: Any = None, bins: int = 10) -> dict[str, Any]:
    """ROC AUC, PR AUC, Brier, ECE, calibration table, top-decile lift, base rate and count.

    `proba` is the churn probability per row (1-d) or a `predict_proba` matrix (its second column
    is used). With `segments` (one label per row) the same report is computed per segment under
    `report["segments"][label]`. A set with one class only reports both AUCs as None and says why
    in its `notes`.
    """
    y = np.asarray(y_true).astype(float).ravel()
    p = np.asarray(proba, dtype=float)
    p = p[:, 1] if p.ndim == 2 else p.ravel()
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} rows but proba has {len(p)}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0/1 (1 = churned)")
    if np.isnan(p).any():
        raise ValueError("proba contains NaN")
    report = _metrics(y, p, bins)
    if segments is not None:
        seg = np.asarray(segments, dtype=object).ravel()
        if len(seg) != len(y):
            raise ValueError(f"segments has {len(seg)} rows but y_true has {len(y)}")
        labels = sorted({str(s) for s in seg})
        seg_str = np.array([str(s) for s in seg], dtype=object)
        report["segments"] = {lab: _metrics(y[seg_str == lab], p[seg_str == lab], bins) for lab in labels}
    return report


def _metrics(y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, Any]:
    n, n_pos = len(y), int(y.sum())
    out: dict[str, Any] = {"n": n, "n_positive": n_pos, "base_rate": n_pos / n if n else None,
                           "roc_auc": None, "pr_auc": None, "brier": None, "ece": None,
                           "ece_binning": f"equal-frequency, {bins} bins", "lift_top_decile": None,
                           "calibration": [], "notes": []}
    if n == 0:
        out["notes"].append("no rows")
        return out
    if 0 < n_pos < n:
        out["roc_auc"] = float(roc_auc_score(y, p))
        out["pr_auc"] = float(average_precision_score(y, p))
    else:
        which = "churned" if n_pos else "retained"
        out["notes"].append(f"AUC undefined: every account here {which} (one class only)")
    out["brier"] = float(brier_score_loss(y, p, pos_label=1))
    out["calibration"] = calibration_table(y, p, bins)
    out["ece"] = float(sum(r["count"] * abs(r["mean_predicted"] - r["observed_rate"])
                           for r in out["calibration"]) / n)
    out["lift_top_decile"] = top_lift(y, p)
    if n_pos < 30:
        out["notes"].append(f"only {n_pos} churned accounts: metrics are noisy")
    return out


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Equal-frequency bins by predicted probability: bin, mean predicted, observed rate, count.

    Bins are cut on the average rank, so rows with the same prediction always share a bin (a
    calibrator's flat steps would otherwise be split arbitrarily); bins can therefore differ in
    size a little, and empty ones are dropped.
    """
    n = len(p)
    if n == 0:
        return []
    ranks = rankdata(p, method="average")  # 1..n
    which = np.minimum(((ranks - 1) * bins / n).astype(int), bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            table.append({"bin": b + 1, "mean_predicted": float(p[mask].mean()),
                          "observed_rate": float(y[mask].mean()), "count": int(mask.sum())})
    return table


def top_lift(y: np.ndarray, p: np.ndarray, share: float = TOP_SHARE) -> float | None:
    """Churn rate among the `share` riskiest rows divided by the overall rate (None if no churn).

    Rows tied with the cut-off contribute their average rate, i.e. the expected lift when ties
    are broken at random, so the figure does not depend on row order.
    """
    n = len(y)
    base = y.mean() if n else 0.0
    if n == 0 or base == 0:
        return None
    k = max(1, math.ceil(n * share))
    cut = np.sort(p)[::-1][k - 1]
    above, tied = p > cut, p == cut
    churned = y[above].sum() + (k - above.sum()) * y[tied].mean()
    return float(churned / k / base)


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def render_text(report: dict[str, Any]) -> str:
    """The report as a compact plain-text table (what `rhub model report` prints)."""
    lines = [
        f"rows {report['n']:,}  churned {report['n_positive']:,} ({_f(report['base_rate'], '.1%')})  "
        f"ROC AUC {_f(report['roc_auc'])}  PR AUC {_f(report['pr_auc'])}  Brier {_f(report['brier'], '.4f')}  "
        f"ECE {_f(report['ece'], '.4f')} ({report['ece_binning']})  "
        f"lift top 10% {_f(report['lift_top_decile'], '.2f')}x",
    ]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    if report["calibration"]:
        lines.append(f"{'bin':>5} {'predicted':>10} {'observed':>10} {'count':>9}")
        lines += [f"{r['bin']:>5} {r['mean_predicted']:>10.4f} {r['observed_rate']:>10.4f} {r['count']:>9,}"
                  for r in report["calibration"]]
    segments = report.get("segments") or {}
    if segments:
        width = max(7, *(len(s) for s in segments))
        lines.append(f"{'segment':<{width}} {'rows':>8} {'churn':>7} {'ROC AUC':>8} {'PR AUC':>7} "
                     f"{'Brier':>7} {'ECE':>7} {'lift':>6}")
        for name, s in segments.items():
            lines.append(f"{name:<{width}} {s['n']:>8,} {_f(s['base_rate'], '.1%'):>7} {_f(s['roc_auc']):>8} "
                         f"{_f(s['pr_auc']):>7} {_f(s['brier'], '.4f'):>7} {_f(s['ece'], '.4f'):>7} "
                         f"{_f(s['lift_top_decile'], '.2f'):>6}"
                         + (f"  ({'; '.join(s['notes'])})" if s["notes"] else ""))
    return "\n".join(lines)
