"""Drift arithmetic (PSI, KS, thresholds) by hand-computed values; the worker's binning by the reference."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from scipy.stats import chi2
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from api import drift
from api.contract import DriftReport
from models.train import SEED
from shared.drift import REFERENCE_FILE, ROWS, window_keys
from shared.registry import Registry
from shared.settings import Settings
from worker.cache import load_predictor
from worker.drift import Watcher, record_json
from worker.runtimes.base import ndjson


def test_psi_and_ks_of_two_bins_are_the_hand_computed_values() -> None:
    """[0.5, 0.5] against [0.9, 0.1]: PSI 0.4 ln(1.8) + 0.4 ln(5) = 0.878890, KS 0.4."""
    reference, current = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert drift.psi(reference, current) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5))
    assert drift.psi(reference, current) == pytest.approx(0.878890, abs=1e-6)
    assert drift.ks(reference, current) == pytest.approx(0.4)


def test_an_empty_bin_counts_as_epsilon_and_ks_is_the_largest_cumulative_gap() -> None:
    """[0.5, 0.5, 0] against [0.5, 0.25, 0.25]: the empty bin is 1e-4, so PSI = 2.128516; KS = 0.25."""
    reference, current = np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.25, 0.25])
    expected = -0.25 * math.log(0.5) + (0.25 - 1e-4) * math.log(0.25 / 1e-4)
    assert drift.psi(reference, current) == pytest.approx(expected)
    assert drift.psi(reference, current) == pytest.approx(2.128516, abs=1e-6)
    assert drift.ks(reference, current) == pytest.approx(0.25)


def test_identical_distributions_have_no_drift() -> None:
    """The same shares give PSI 0 and KS 0."""
    shares = np.array([0.1, 0.2, 0.3, 0.4])
    assert drift.psi(shares, shares) == 0.0
    assert drift.ks(shares, shares) == 0.0


def test_thresholds_are_the_rule_of_thumb_unless_few_records_leave_room_for_noise() -> None:
    """Many records: 0.2 and 0.1; 105 against 150 records: chi-square's and KS's 1% critical values."""
    assert drift.psi_threshold(10, 1_000_000, 1_000_000) == 0.2
    assert drift.ks_threshold(1_000_000, 1_000_000) == 0.1
    assert drift.psi_threshold(10, 105, 150) == pytest.approx(21.666 * (1 / 105 + 1 / 150))
    assert drift.ks_threshold(105, 150) == pytest.approx(1.628 * math.sqrt(255 / (105 * 150)))
    assert drift.psi_threshold(1, 10, 10) == pytest.approx(max(0.2, 6.635 * 0.2))


def test_the_chi_square_table_is_scipys() -> None:
    """The written 99th percentiles are the chi-square distribution's, for 1 to 9 degrees of freedom."""
    for freedom, value in enumerate(drift.CHI2_99, start=1):
        assert value == pytest.approx(chi2.ppf(0.99, freedom), abs=1e-3)
    assert pytest.approx(math.sqrt(-math.log(0.005) / 2), abs=1e-3) == drift.KS_C_99


def _iris_training_rows() -> np.ndarray[Any, Any]:
    """Return the rows iris 1.0.0 was trained on and its reference frozen from (models/train.py's split)."""
    data = load_iris()
    labels = np.asarray(data.target_names)[data.target]
    rows, _, _, _ = train_test_split(data.data, labels, test_size=0.3, random_state=SEED, stratify=labels)
    return np.asarray(rows)


def _counted(registry: Registry, model: str, rows: Any, sizes: list[int]) -> tuple[dict[str, int], list[Any]]:
    """Count rows with the worker's watcher in chunks of the sizes; return the summed counts, the watches."""
    root = registry.storage.root  # type: ignore[attr-defined]
    predictor = load_predictor(root, registry.get(model))
    records = np.asarray(rows, dtype=np.float32) if not isinstance(rows, list) else rows
    scores = predictor.scores(records)
    bounds = np.cumsum([0, *sizes])
    lines = [ndjson(predictor.manifest, scores[a:b]) for a, b in itertools.pairwise(bounds)]
    # A client that never connects: with nothing sampled, watching does not talk to Redis.
    watcher = Watcher(registry, Settings(prediction_log_rate=0), redis.Redis(port=1))
    watches = watcher.watch(predictor, records, scores, sizes, lines)
    totals: dict[str, int] = {}
    for watch in watches:
        assert watch is not None
        pairs = watch.counts
        for field, count in zip(pairs[0::2], pairs[1::2], strict=True):
            totals[str(field)] = totals.get(str(field), 0) + int(count)
    return totals, watches


def test_the_reference_rows_counted_by_the_worker_give_the_reference_shares(registry: Registry) -> None:
    """Iris's training rows, binned by the worker in three chunks, have the reference's shares: no drift."""
    rows = _iris_training_rows()
    counts, watches = _counted(registry, "iris", rows, [50, 1, len(rows) - 51])
    assert [dict(zip(w.counts[0::2], w.counts[1::2], strict=True))[ROWS] for w in watches] == [50, 1, 54]
    reference = orjson.loads(registry.read_file(registry.get("iris"), REFERENCE_FILE) or b"")
    report = drift.drift_report("iris", "1.0.0", 3600, reference, counts)
    DriftReport.model_validate(report)
    assert report["current_rows"] == report["reference_rows"] == len(rows)
    assert [f["name"] for f in report["features"]] == list(reference["features"])
    for feature in report["features"]:
        assert feature["psi"] == pytest.approx(0, abs=1e-4), feature
        assert feature["ks"] == pytest.approx(0, abs=1e-5), feature
        assert not feature["drift"]
    assert report["prediction"]["current"] == pytest.approx(report["prediction"]["reference"], abs=1e-5)
    assert (report["drifted_share"], report["dataset_drift"]) == (0.0, False)


def test_a_text_model_counts_lengths_and_tokens_outside_its_vocabulary(registry: Registry) -> None:
    """Texts of unknown words are all outside the vocabulary; their lengths fall in the reference's bins."""
    texts = ["zzqx wvvk plorb", "qqqq rrrr", "xyzzy " * 40]
    counts, _ = _counted(registry, "scam-email", texts, [2, 1])
    assert counts[ROWS] == 3
    assert counts["oov"] == counts["tokens"] == 3 + 2 + 40
    reference = orjson.loads(registry.read_file(registry.get("scam-email"), REFERENCE_FILE) or b"")
    report = drift.drift_report("scam-email", "1.0.0", 60, reference, counts)
    DriftReport.model_validate(report)
    names = [f["name"] for f in report["features"]]
    assert names == ["text.length", "text.out_of_vocabulary"]
    # Every current token is unknown: the gap to the reference is its share of known tokens.
    known = 1 - reference["features"]["text"]["out_of_vocabulary_share"]
    assert report["features"][1]["ks"] == pytest.approx(known, abs=1e-6)


def test_a_version_without_reference_or_records_says_why_there_is_nothing_to_compare() -> None:
    """No reference: no features and a note; a reference but no records: nulls, no drift, a note."""
    bare = drift.drift_report("iris", "1.0.0", 60, None, {})
    DriftReport.model_validate(bare)
    assert (bare["features"], bare["prediction"], bare["dataset_drift"]) == ([], None, False)
    assert "reference" in bare["note"]
    reference = {
        "rows": 10,
        "features": {"a": {"type": "number", "edges": [1.0], "shares": [0.5, 0.5]}},
        "predictions": {"values": {"edges": [0.0], "shares": [0.5, 0.5]}},
    }
    idle = drift.drift_report("m", "1.0.0", 60, reference, {})
    DriftReport.model_validate(idle)
    assert idle["features"] == [
        {"name": "a", "psi": None, "ks": None, "drift": False, "psi_threshold": None, "ks_threshold": None}
    ]
    assert idle["prediction"]["current"] == {"(-inf, 0]": 0.0, "(0, inf]": 0.0}
    assert idle["drifted_share"] is None
    assert "No record" in idle["note"]


def test_a_window_sums_the_minutes_it_covers() -> None:
    """An hour at 12:00:30 covers the 61 minute keys from 11:00 to 12:00, the current one included."""
    keys = window_keys("iris", "1.0.0", 3600, 12 * 3600 + 30)
    assert len(keys) == 61
    assert keys[0] == "drift:iris:1.0.0:660"
    assert keys[-1] == "drift:iris:1.0.0:720"


def test_a_logged_record_is_its_values_by_feature_name(registry: Registry) -> None:
    """The record of a float32 row reads as the values sent (5.1, not 5.099999904632568)."""
    row = np.asarray([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    assert orjson.loads(record_json(registry.get("iris"), row, 0)) == {
        "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2,
    }  # fmt: skip
