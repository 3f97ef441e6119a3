import math

import pytest

from prune_env.metrics import kendall_tau


def test_kendall_tau_hand_computed():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs of [1,2,3] vs [1,3,2]: (1,2)+ (1,3)+ (2,3)- -> (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # tau-b with a tie in x: x=[1,1,2], y=[1,2,3]: pairs (0,1) tie in x, (0,2)+, (1,2)+
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(2 * 3))
    assert math.isnan(kendall_tau([1, 1], [2, 2]))
    with pytest.raises(ValueError):
        kendall_tau([1], [1])
