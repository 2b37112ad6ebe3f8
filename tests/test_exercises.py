import pytest

from ssr_lib import exercises


def test_parameter_count_right_and_wrong(capsys):
    assert exercises.check_parameter_count((2, 2, 2, 2), exercises.parameter_count((2, 2, 2, 2)))
    assert "Correct" in capsys.readouterr().out
    assert not exercises.check_parameter_count((2, 2, 2, 2), 40_915)
    assert "Not quite" in capsys.readouterr().out


def test_parameter_count_hints(capsys):
    expected = exercises.parameter_count((3, 3, 3))
    assert not exercises.check_parameter_count((3, 3, 3), expected - exercises.BACKBONE_PARAMETERS)
    assert "stage heads only" in capsys.readouterr().out
    assert not exercises.check_parameter_count((3, 3, 3), expected - exercises.MOVING_STATISTICS)
    assert "moving mean" in capsys.readouterr().out


def test_finest_step_right_and_wrong(capsys):
    assert exercises.check_finest_step((3, 3, 3), 101 / 27)
    assert not exercises.check_finest_step((3, 3, 3), 101 / 9)
    assert not exercises.check_finest_step((3, 3, 3), 101 / 9 + 5)
    output = capsys.readouterr().out
    assert "multiply" in output
    assert "product" in output


def test_single_stage_bins_right_and_wrong():
    assert exercises.check_single_stage_bins((3, 3, 3), 27)
    assert not exercises.check_single_stage_bins((3, 3, 3), 9)


def test_smallest_right_and_wrong():
    configurations = [(3, 3, 3), (9,), (2, 2, 2, 2)]
    assert exercises.check_smallest(configurations, (9,))
    assert not exercises.check_smallest(configurations, (2, 2, 2, 2))


@pytest.mark.parametrize("lambda_d", [0.0, 1.0])
def test_expected_age_right_and_wrong(lambda_d):
    p = [[0, 1, 0], [0.5, 0.5, 0]]
    eta = [[0, 0, 0], [0, 0, 0]]
    delta = [0.25, 0.0]
    right = 101 * (1 / (3 * (1 + lambda_d * 0.25)) + 0.5 / (9 * (1 + lambda_d * 0.25)))
    assert exercises.check_expected_age(p, eta, delta, right, lambda_d=lambda_d)
    assert not exercises.check_expected_age(p, eta, delta, right + 1, lambda_d=lambda_d)


def test_missing_answer_reminds(capsys):
    assert not exercises.check_parameter_count((3, 3, 3), None)
    assert "replace `None`" in capsys.readouterr().out


def test_answers_in_other_forms():
    assert exercises.check_smallest([(3, 3, 3), 9, (2, 2, 2, 2)], 9)
    assert exercises.check_parameter_count((2, 2, 2, 2), "41,114")
    assert exercises.check_finest_step((2, 2, 2, 2), 6.31)
    assert not exercises.check_parameter_count((2, 2, 2, 2), "many")


def test_expected_age_hints_name_the_mistake(capsys):
    p, eta, delta = [[0, 1, 0], [0.5, 0.5, 0]], [[0, 0.5, 0], [0, 0, 0]], [0.25, 0.0]
    without_shift = 101 * (1 / 3.75 + 0.5 / 11.25)
    assert not exercises.check_expected_age(p, eta, delta, without_shift)
    assert "Add the shifts" in capsys.readouterr().out
