"""A version's drift report: its window of served records against the reference frozen at publish.

Each feature's current shares (records by the reference's bins) are compared with the reference's:

- PSI, the population stability index: the sum over bins of (c - r) * ln(c / r), an empty bin's
  share taken as EPSILON so the sum stays finite;
- KS, the Kolmogorov-Smirnov distance of the binned distributions: the largest gap between the two
  cumulative shares at a bin edge (a lower bound of the distance of the raw values).

A feature drifts when its PSI is at least PSI_DRIFT (the usual "significant shift") or its KS at
least KS_DRIFT, each raised when few records are compared so that sampling noise alone does not
reach it (1% false alarms): PSI's noise is about (1/n + 1/m) times a chi-square of bins - 1
degrees of freedom, KS's critical value is 1.628 * sqrt((n + m) / (n m)). A text model's features
are its texts' length (binned) and their tokens' share outside the vocabulary (two bins: outside,
inside; counted on a sample of each batch's texts). The predictions drift by the PSI rule; the
dataset drifts when at least DATASET_DRIFT of the features do.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.drift import OOV, ROWS, TOKENS, feature_field, prediction_field

EPSILON = 1e-4
PSI_DRIFT = 0.2
KS_DRIFT = 0.1
DATASET_DRIFT = 0.5
# The chi-square's 99th percentile by degrees of freedom (bins - 1; the reference has at most 10 bins).
CHI2_99 = (6.635, 9.210, 11.345, 13.277, 15.086, 16.812, 18.475, 20.090, 21.666)
# c(alpha) of the two-sample KS test at alpha = 0.01: sqrt(-ln(alpha / 2) / 2).
KS_C_99 = 1.628

Shares = npt.NDArray[np.float64]


def psi(reference: Shares, current: Shares) -> float:
    """Return the population stability index of two distributions over the same bins."""
    r = np.maximum(np.asarray(reference, dtype=np.float64), EPSILON)
    c = np.maximum(np.asarray(current, dtype=np.float64), EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def ks(reference: Shares, current: Shares) -> float:
    """Return the largest gap between the cumulative shares of two distributions over the same bins."""
    gaps = np.cumsum(np.asarray(current, dtype=np.float64)) - np.cumsum(
        np.asarray(reference, dtype=np.float64)
    )
    return float(np.max(np.abs(gaps))) if gaps.size else 0.0


def psi_threshold(bins: int, n: int, m: int) -> float:
    """Return the PSI from which a feature of so many bins, over n and m records, drifts."""
    noise = CHI2_99[min(max(bins - 1, 1), len(CHI2_99)) - 1] * (1 / n + 1 / m)
    return max(PSI_DRIFT, noise)


def ks_threshold(n: int, m: int) -> float:
    """Return the KS distance from which a feature over n and m records drifts."""
    return max(KS_DRIFT, KS_C_99 * math.sqrt((n + m) / (n * m)))


def _compared(name: str, reference: Shares, counts: list[int], n: int, rows: int) -> dict[str, Any]:
    """Return one feature's comparison: PSI, KS, their thresholds and whether it drifts."""
    total = sum(counts)
    if not total or not n:
        return {
            "name": name,
            "psi": None,
            "ks": None,
            "drift": False,
            "psi_threshold": None,
            "ks_threshold": None,
        }
    current = np.asarray(counts, dtype=np.float64) / total
    found_psi, found_ks = psi(reference, current), ks(reference, current)
    limit_psi, limit_ks = psi_threshold(len(reference), n, rows), ks_threshold(n, rows)
    return {
        "name": name,
        "psi": round(found_psi, 6),
        "ks": round(found_ks, 6),
        "drift": found_psi >= limit_psi or found_ks >= limit_ks,
        "psi_threshold": round(limit_psi, 6),
        "ks_threshold": round(limit_ks, 6),
    }


def _features(reference: dict[str, Any], counts: dict[str, int], rows: int) -> list[dict[str, Any]]:
    n = int(reference["rows"])
    compared = []
    for index, (name, stats) in enumerate(reference["features"].items()):
        binned = stats.get("length", stats)
        shares = np.asarray(binned["shares"], dtype=np.float64)
        found = [counts.get(feature_field(index, b), 0) for b in range(len(shares))]
        compared.append(_compared(f"{name}.length" if "length" in stats else name, shares, found, n, rows))
        outside = stats.get("out_of_vocabulary_share")
        if outside is not None:
            tokens = counts.get(TOKENS, 0)
            oov = counts.get(OOV, 0)
            split = [oov, tokens - oov] if tokens else [0, 0]
            share = np.asarray([outside, 1 - outside], dtype=np.float64)
            compared.append(_compared(f"{name}.out_of_vocabulary", share, split, n, rows))
    return compared


def _prediction(reference: dict[str, Any], counts: dict[str, int], rows: int) -> dict[str, Any]:
    predictions = reference["predictions"]
    if "labels" in predictions:
        names = list(predictions["labels"])
        shares = [float(s) for s in predictions["labels"].values()]
    else:
        edges = [f"{e:g}" for e in predictions["values"]["edges"]]
        bounds = ["-inf", *edges, "inf"]
        names = [f"({low}, {high}]" for low, high in itertools.pairwise(bounds)]
        shares = [float(s) for s in predictions["values"]["shares"]]
    found = [counts.get(prediction_field(k), 0) for k in range(len(names))]
    total = sum(found)
    compared = _compared("prediction", np.asarray(shares), found, int(reference["rows"]), rows)
    return {
        "psi": compared["psi"],
        "drift": compared["psi"] is not None and compared["psi"] >= compared["psi_threshold"],
        "reference": dict(zip(names, shares, strict=True)),
        "current": {
            name: round(count / total, 6) if total else 0.0 for name, count in zip(names, found, strict=True)
        },
    }


def drift_report(
    model: str, version: str, window_s: int, reference: dict[str, Any] | None, counts: dict[str, int]
) -> dict[str, Any]:
    """Return the drift of a version's served records in a window against its reference statistics."""
    rows = counts.get(ROWS, 0)
    report: dict[str, Any] = {
        "model": model,
        "version": version,
        "window_s": window_s,
        "reference_rows": int(reference["rows"]) if reference else 0,
        "current_rows": rows,
        "features": [],
        "prediction": None,
        "drifted_share": None,
        "dataset_drift": False,
        "note": None,
    }
    if reference is None:
        report["note"] = (
            "This version was published without reference rows, so there is nothing to compare with: "
            "publish a version with a reference CSV to watch its drift."
        )
        return report
    report["features"] = _features(reference, counts, rows)
    report["prediction"] = _prediction(reference, counts, rows)
    if not rows:
        report["note"] = "No record of this version was served in the window: widen window_s or send traffic."
        return report
    drifted = sum(feature["drift"] for feature in report["features"])
    share = drifted / len(report["features"]) if report["features"] else 0.0
    report["drifted_share"] = round(share, 6)
    report["dataset_drift"] = share >= DATASET_DRIFT
    return report
