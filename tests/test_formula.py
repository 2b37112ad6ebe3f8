import numpy as np
import pytest

from ssr_lib import formula


def zeros(batch, bins):
    return np.zeros((batch, bins), np.float32)


def test_paper_example_two_stages():
    # V = 90, stage 1 sure of "middle age", stage 2 at 0.7 / 0.3 / 0.
    p = [np.array([[0, 1, 0]], np.float32), np.array([[0.7, 0.3, 0]], np.float32)]
    age = formula.soft_stagewise_regression(
        p, [zeros(1, 3)] * 2, [np.zeros(1)] * 2, lambda_local=0, lambda_d=0, age_range=90
    )
    assert age[0] == pytest.approx(90 * (1 / 3 + 0.3 / 9), rel=1e-6)


def test_single_stage_is_dex_expected_value():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(101), size=4).astype(np.float32)
    age = formula.soft_stagewise_regression([p], [zeros(4, 101)], [np.zeros(4)], lambda_local=0, lambda_d=0)
    expected = (p * np.arange(101)).sum(axis=1)  # V / s = 1 year per bin
    np.testing.assert_allclose(age, expected, rtol=1e-5)


def test_shift_and_scale_move_the_age():
    p = [np.array([[0, 1, 0]], np.float32)]
    base = formula.soft_stagewise_regression(p, [zeros(1, 3)], [np.zeros(1)], age_range=90)
    shifted = formula.soft_stagewise_regression(p, [np.array([[0, 0.5, 0]], np.float32)], [np.zeros(1)], age_range=90)
    stretched = formula.soft_stagewise_regression(p, [zeros(1, 3)], [np.array([0.5])], age_range=90)
    assert base[0] == pytest.approx(30.0)
    assert shifted[0] == pytest.approx(45.0)  # (1 + 0.5) * 90 / 3
    assert stretched[0] == pytest.approx(20.0)  # 90 / (3 * 1.5)


def test_scale_guard_keeps_age_finite():
    p = [np.ones((2, 3), np.float32)]
    age = formula.soft_stagewise_regression(p, [zeros(2, 3)], [np.array([-1.0, -5.0], np.float32)])
    assert np.all(np.isfinite(age))


def test_mismatched_stage_lists_rejected():
    with pytest.raises(ValueError, match="equal length"):
        formula.soft_stagewise_regression([zeros(1, 3)], [], [np.zeros(1)])
