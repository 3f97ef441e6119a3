"""The paired bootstrap against hand computations, and what its verdict may claim."""

import numpy as np
import pytest

from prune_pipeline.statistics import PairedDifference, paired_bootstrap, verdict


def test_three_seeds_match_the_enumerated_bootstrap_by_hand():
    # differences 1, 2, 3: the 27 resamples have sums 3..9 with counts 1,3,6,7,6,3,1; sorted
    # means: 1, 4/3 x3, 5/3 x6, 2 x7, 7/3 x6, 8/3 x3, 3. The inverted-cdf 0.025 quantile is the
    # first mean whose cumulative share reaches 0.025 (1, share 1/27), the 0.975 one the first
    # reaching 0.975 (3: 26/27 < 0.975).
    d = paired_bootstrap([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert d.method == "exact" and d.n == 3 and d.level == 0.95
    assert d.mean == pytest.approx(2.0)
    assert d.low == pytest.approx(1.0)
    assert d.high == pytest.approx(3.0)


def test_one_losing_seed_is_not_outvoted():
    d = paired_bootstrap([0.69, 0.80, 0.80], [0.70, 0.70, 0.70])  # -0.01, +0.10, +0.10
    assert d.low == pytest.approx(-0.01) and d.high == pytest.approx(0.10)
    assert verdict(d) == "not distinguishable"


def test_the_difference_is_a_minus_b_and_pairs_by_position():
    d = paired_bootstrap([0.70, 0.60], [0.65, 0.50])  # differences 0.05, 0.10
    assert d.mean == pytest.approx(0.075)
    # 4 resamples: means 0.05, 0.075, 0.075, 0.10
    assert d.low == pytest.approx(0.05) and d.high == pytest.approx(0.10)
    flipped = paired_bootstrap([0.65, 0.50], [0.70, 0.60])
    assert (flipped.mean, flipped.low, flipped.high) == pytest.approx((-d.mean, -d.high, -d.low))
    # unpaired order would give other differences (0.70-0.50, 0.60-0.65)
    assert paired_bootstrap([0.70, 0.60], [0.50, 0.65]).mean == pytest.approx(0.075)
    assert paired_bootstrap([0.70, 0.60], [0.50, 0.65]).low < d.low


def test_agreeing_seeds_give_a_point_interval():
    d = paired_bootstrap([0.8, 0.7, 0.9, 0.6], [0.75, 0.65, 0.85, 0.55])
    assert d.low == pytest.approx(0.05) and d.high == pytest.approx(0.05)


def test_many_seeds_draw_resamples_reproducibly():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.7, 0.02, 12), rng.normal(0.69, 0.02, 12)
    d = paired_bootstrap(a, b, resamples=4000, seed=3)
    assert d.method == "monte carlo"
    assert d == paired_bootstrap(a, b, resamples=4000, seed=3)
    assert d.low < d.mean < d.high
    # the percentile interval of the mean is about mean +- 1.96 * sd / sqrt(n)
    half = 1.96 * np.std(a - b) / np.sqrt(12)
    assert d.high - d.low == pytest.approx(2 * half, rel=0.2)


def test_verdicts_claim_only_what_the_interval_supports():
    def diff(low, high):
        return PairedDifference((low + high) / 2, low, high, 0.95, 3, "exact")

    assert verdict(diff(0.01, 0.03)) == "better"
    assert verdict(diff(-0.03, -0.01)) == "worse"
    assert verdict(diff(-0.01, 0.03)) == "not distinguishable"
    assert verdict(diff(0.0, 0.03)) == "not distinguishable"
    assert verdict(diff(0.01, 0.03), margin=0.02) == "not distinguishable"
    # one or two seeds: a point interval around any difference establishes nothing
    one = paired_bootstrap([0.75], [0.70])
    assert one.low == one.high == pytest.approx(0.05)
    assert verdict(one) == "too few seeds"
    assert verdict(paired_bootstrap([0.75, 0.74], [0.70, 0.70])) == "too few seeds"


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0, 2.0], [1.0], {}, "equally long"),
        ([], [], {}, "non-empty"),
        ([1.0, float("nan")], [1.0, 1.0], {}, "finite"),
        ([1.0], [1.0], {"level": 1.0}, "level must be in"),
        ([1.0], [1.0], {"resamples": 0}, "resamples must be"),
    ],
)
def test_bad_input_is_named(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)
