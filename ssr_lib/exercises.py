"""Check functions for the stage-configuration exercises.

Each `check_*` function compares a student's answer with the value the kit
computes, prints whether it is right and, if not, a hint about the usual
mistake, and returns `True` or `False`.

Introduced in notebook 10, *Exercises: stage configuration*.
"""

import math

from ssr_lib.formula import AGE_RANGE
from ssr_lib.model import build_ssrnet, stage_taps

# Parameters of the two backbone streams, which every configuration shares.
BACKBONE_PARAMETERS = 36_816
# BatchNorm's moving means and variances: 4 blocks of 32 + 16 channels, 2 each.
MOVING_STATISTICS = 4 * (32 + 16) * 2


def _report(correct, message):
    print(("Correct. " if correct else "Not quite. ") + message)
    return correct


def _missing(answer):
    """Print a reminder and return `True` when the student has not answered yet."""
    if answer is None:
        print("No answer yet: replace `None` with your answer and run the cell again.")
        return True
    return False


def _number(answer):
    """Read a numeric answer, also from text such as "41,114". Return `None` for a non-number."""
    if isinstance(answer, str):
        answer = answer.replace(",", "").replace("_", "").strip()
    try:
        return float(answer)
    except (TypeError, ValueError):
        print(f"Expected a number. Received: {answer!r}")
        return None


def _bins(configuration):
    """Read a stage configuration: a tuple of bins, or one int for a single stage."""
    if isinstance(configuration, int):
        return (configuration,)
    return tuple(int(b) for b in configuration)


def parameter_count(stage_bins):
    """Count the parameters of SSR-Net with `stage_bins` by building it in Keras."""
    return build_ssrnet(stage_bins).count_params()


def check_parameter_count(stage_bins, answer):
    """Check a predicted parameter count of SSR-Net with `stage_bins`."""
    if _missing(answer) or (answer := _number(answer)) is None:
        return False
    stage_bins = tuple(stage_bins)
    expected = parameter_count(stage_bins)
    if answer == expected:
        return _report(True, f"SSR-Net{stage_bins} has {expected:,} parameters.")
    difference = answer - expected
    hint = f"Your count is {difference:+,} away from the model's."
    if answer == expected - BACKBONE_PARAMETERS:
        hint += " You counted the stage heads only: add the two streams (36,816)."
    elif difference == -MOVING_STATISTICS:
        hint += " Did you count BatchNorm's moving mean and variance? Keras counts them."
    else:
        hint += (" Stages read " + ", ".join(tap for tap, _ in stage_taps(len(stage_bins)))
                 + ": the last block gives 4x4x10 = 160 features, every other tap 3x3x10 = 90.")
    return _report(False, hint)


def finest_step(stage_bins, age_range=AGE_RANGE):
    """Return the width in years of the last stage's bins with both lambdas at 0."""
    return age_range / math.prod(stage_bins)


def check_finest_step(stage_bins, answer, age_range=AGE_RANGE, tolerance=0.05):
    """Check the width of the finest bins of `stage_bins`, in years (two decimals suffice)."""
    if _missing(answer) or (answer := _number(answer)) is None:
        return False
    expected = finest_step(stage_bins, age_range)
    if abs(answer - expected) <= tolerance:
        return _report(True, f"{age_range:g} / {math.prod(stage_bins)} = {expected:.2f} years.")
    if abs(answer - age_range / sum(stage_bins)) <= tolerance:
        return _report(False, "The widths multiply: each stage divides the previous stage's bins.")
    return _report(False, f"Divide V = {age_range:g} by the product of the bin counts.")


def check_single_stage_bins(stage_bins, answer):
    """Check how many bins one stage needs to match the finest step of `stage_bins`."""
    if _missing(answer) or (answer := _number(answer)) is None:
        return False
    expected = math.prod(stage_bins)
    if answer == expected:
        return _report(True, f"One stage needs {expected} bins; SSR-Net{tuple(stage_bins)} "
                             f"uses {sum(stage_bins)} outputs of p per image.")
    return _report(False, "A single stage's bins must be as narrow as the last stage's bins.")


def check_smallest(configurations, answer):
    """Check which of `configurations` (lists of bins) has the fewest parameters."""
    if _missing(answer):
        return False
    counts = {_bins(c): parameter_count(_bins(c)) for c in configurations}
    expected = min(counts, key=counts.get)
    listing = ", ".join(f"{c}: {n:,}" for c, n in counts.items())
    if _bins(answer) == expected:
        return _report(True, listing)
    return _report(False, "Each extra stage adds two 1x1 convs (500 weights) and a fusion block. "
                          "Compare that with what extra bins cost in the Dense layers.")


def check_expected_age(p, eta, delta, answer, lambda_local=1.0, lambda_d=1.0, age_range=AGE_RANGE,
                       tolerance=0.05):
    """Check a hand-computed age for one face's stage outputs (lists of lists)."""
    if _missing(answer) or (answer := _number(answer)) is None:
        return False
    import numpy as np

    from ssr_lib.formula import soft_stagewise_regression

    def age(lambda_local=lambda_local, lambda_d=lambda_d):
        return float(soft_stagewise_regression(
            [np.array([x], float) for x in p], [np.array([x], float) for x in eta],
            [np.array([d], float) for d in delta], lambda_local, lambda_d, age_range,
        )[0])

    expected = age()
    if abs(answer - expected) <= tolerance:
        return _report(True, f"The formula gives {expected:.2f} years.")
    if abs(answer - age(lambda_local=0.0)) <= tolerance:
        return _report(False, "Add the shifts: each bin's index i becomes i + lambda_local * eta_i.")
    if abs(answer - age(lambda_d=0.0)) <= tolerance:
        return _report(False, "Include the scales: each s_j is multiplied by 1 + lambda_d * delta_j.")
    return _report(False, "Stage k's denominator is the product over all stages j <= k of "
                          "s_j (1 + lambda_d delta_j), not stage k's factor alone.")
