"""kit.testing: the built-in tasks pass check_task, and check_task catches broken tasks."""

from __future__ import annotations

import random

import pytest
from kit_plugins.classification import Classification
from kit_plugins.regression import Regression

import kit
from kit.testing import check_task
from tests.conftest import review

pytestmark = pytest.mark.slow


def test_classification_passes_check_task(tmp_path):
    rng = random.Random(0)
    rows = [{"text": review(rng, i % 2 == 0), "label": "pos" if i % 2 == 0 else "neg"} for i in range(60)]
    result = check_task(Classification, rows, tmp_path, register=False)
    assert {"accuracy", "f1"} <= set(result.metrics["test"])
    assert {p["label"] for p in result.predictions} <= {"pos", "neg"}


def test_regression_passes_check_task(tmp_path):
    rng = random.Random(0)
    rows = []
    for _ in range(60):
        x = rng.uniform(-1, 1)
        rows.append({"x": x, "colour": rng.choice(["red", "blue"]), "target": 2 * x})
    result = check_task(Regression, rows, tmp_path, register=False)
    assert "r2" in result.metrics["test"]
    assert all(isinstance(p["target"], float) for p in result.predictions)


def test_check_task_rejects_a_task_without_description(tmp_path):
    class Nameless(Regression):
        name = "nameless"
        description = ""

    with pytest.raises(AssertionError, match="description is empty"):
        check_task(Nameless, [{"x": 1.0, "target": 1.0}] * 20, tmp_path)


def test_check_task_catches_bad_predictions(tmp_path):
    class BadPredictions(Regression):
        name = "bad_predictions"
        description = "Predicts the wrong shape of result."

        def predictions(self, outputs):
            return [[float(v) for v in row] for row in outputs]

    rows = [{"x": float(i), "target": float(i)} for i in range(20)]
    with pytest.raises(kit.PluginError, match="predictions\\(\\) must return one dict per example, got list"):
        check_task(BadPredictions, rows, tmp_path)
    assert issubclass(BadPredictions, kit.Task)
