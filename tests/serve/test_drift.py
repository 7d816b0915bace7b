"""Drift against training statistics, on data with a known shift; the statistics fields keep for it."""

from __future__ import annotations

import random

import pytest

from kit.data.fields import CategoryField, NumberField, TextField
from kit.serve.drift import Drift, psi


def trained_number(values) -> NumberField:
    field = NumberField("x")
    for value in values:
        field.observe(value)
    field.finish()
    return field


def test_a_number_field_keeps_deciles_of_its_training_values_reproducibly():
    rng = random.Random(3)
    values = [rng.gauss(10, 2) for _ in range(20_000)]  # more than the reservoir holds
    first, second = trained_number(values).get_state(), trained_number(values).get_state()
    assert first == second
    assert len(first["deciles"]) == 9 and first["deciles"] == sorted(first["deciles"])
    assert first["deciles"][4] == pytest.approx(10, abs=0.15)  # the median of N(10, 2)
    assert sum(first["decile_shares"]) == pytest.approx(1)
    restored = NumberField("x")
    restored.set_state(first)
    assert restored.get_state() == first


def test_a_run_trained_before_deciles_still_loads():
    field = NumberField("x")
    field.set_state({"mean": 1.0, "std": 2.0, "count": 5})
    assert field.get_state() == {"mean": 1.0, "std": 2.0, "count": 5}
    drift = Drift([field])
    drift.observe([{"x": 1.0}])
    assert drift.figures()["x"]["psi"] >= 0


def test_no_shift_scores_low_and_a_one_std_shift_scores_high():
    rng = random.Random(0)
    field = trained_number([rng.gauss(0, 1) for _ in range(5000)])
    same, shifted = Drift([field], window=2000), Drift([field], window=2000)
    same.observe([{"x": rng.gauss(0, 1)} for _ in range(2000)])
    shifted.observe([{"x": rng.gauss(1, 1)} for _ in range(2000)])
    calm, moved = same.figures()["x"], shifted.figures()["x"]
    assert abs(calm["mean_shift"]) < 0.1 and calm["psi"] < 0.05
    assert moved["mean_shift"] == pytest.approx(1.0, abs=0.1)
    assert moved["psi"] > 0.25  # the usual threshold of a large shift


def test_the_window_forgets_old_rows():
    field = trained_number([float(n % 10) for n in range(1000)])
    drift = Drift([field], window=100)
    drift.observe([{"x": 100.0}] * 100)
    drift.observe([{"x": float(n % 10)} for n in range(100)])
    figures = drift.figures()["x"]
    assert figures["rows"] == 100 and figures["psi"] < 0.05


def test_psi_is_zero_for_equal_shares_and_grows_with_difference():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert 0 < psi([0.5, 0.5], [0.6, 0.4]) < psi([0.5, 0.5], [0.9, 0.1])


def test_unseen_categories_and_text_length():
    colour = CategoryField("colour")
    for value in ("red", "green", "blue"):
        colour.observe(value)
    colour.finish()
    text = TextField("text")
    for n in (10, 20, 30):
        text.observe("a" * n)
    drift = Drift([colour, text])
    drift.observe([{"colour": "red", "text": "a" * 20}, {"colour": "purple", "text": "a" * 40}] * 5)
    drift.observe_tokens("text", [(1, 4), (0, 6)])
    figures = drift.figures()
    assert figures["colour"]["unseen_rate"] == 0.5 and figures["colour"]["unseen_values"] == ["purple"]
    assert figures["text"]["length_mean"] == 30
    assert figures["text"]["length_shift"] == pytest.approx((30 - 20) / text.length.std())
    assert figures["text"]["unknown_token_rate"] == pytest.approx(0.1)
