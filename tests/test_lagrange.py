"""Lagrange multipliers: hand-computed updates, relative violation, PID terms, state round trips."""

import itertools

import numpy as np
import pytest
import torch as th

from agents import GradientLagrange, PIDLagrange


def test_gradient_is_projected_ascent_on_the_relative_violation():
    # SGD by default: no momentum; no cap on the violation (see the wind-up test for it)
    lag = GradientLagrange(0.2, lr=0.1, optimism=0.0, max_violation=None)
    # e = (0.5 - 0.2) / 0.2 = 1.5 -> lambda_rel = 0.15 -> lambda = 0.15 / 0.2 = 0.75
    assert lag.update(0.5)[0] == pytest.approx(0.75, abs=1e-6)
    # e = (0.1 - 0.2) / 0.2 = -0.5 -> lambda_rel = 0.15 - 0.05 = 0.10 -> lambda = 0.5
    assert lag.update(0.1)[0] == pytest.approx(0.5, abs=1e-6)
    # at the limit it does not move (a momentum optimizer would keep going)
    assert lag.update(0.2)[0] == pytest.approx(0.5, abs=1e-6)
    # far under the limit: projected onto lambda >= 0
    for _ in range(5):
        lag.update(0.0)
    assert lag.value.tolist() == [0.0]


def test_adam_stays_an_option_and_overshoots():
    adam = GradientLagrange(0.2, lr=0.1, optimizer="Adam", optimism=0.0)
    sgd = GradientLagrange(0.2, lr=0.1, optimism=0.0)
    for _ in range(5):
        adam.update(0.5)
        sgd.update(0.5)
    a, s = adam.value[0], sgd.value[0]
    adam.update(0.2)  # the cost reached the limit: momentum keeps lambda rising
    sgd.update(0.2)
    assert adam.value[0] > a and sgd.value[0] == pytest.approx(s)
    with pytest.raises(ValueError, match="optimizer"):
        GradientLagrange(0.2, optimizer="Nope")


@pytest.mark.parametrize("kind", ["gradient", "pid"])
def test_scaling_a_cost_and_its_limit_scales_lambda_inversely(kind):
    def make(limit):
        if kind == "gradient":
            return GradientLagrange(limit, lr=0.1)
        return PIDLagrange(limit, kp=0.3, ki=0.1, kd=0.2, d_delay=2)

    small, large = make(0.1), make(25.0)
    costs = [0.4, 0.3, 0.12, 0.05, 0.09, 0.2, 0.0]
    for c in costs:
        small.update(c)
        large.update(c * 250)
        # same controller trajectory: lambda * d agrees, lambda itself scales as 1 / d
        # (float32: a value clipped near 0 keeps rounding residue of order 1e-7)
        assert small.value[0] * 0.1 == pytest.approx(large.value[0] * 25.0, rel=1e-5, abs=1e-6)


def test_a_new_limit_keeps_lambda_rel_or_lambda():
    for kind in (GradientLagrange(0.2, init=1.0), PIDLagrange(0.2, init=1.0)):
        kind.set_cost_limit(0.4)  # the controller's state (lambda * d) is kept
        assert kind.value[0] == pytest.approx(0.5)
        kind.set_cost_limit(0.1, keep="value")  # lambda itself is kept
        assert kind.value[0] == pytest.approx(0.5)
        assert kind.relative_value.item() == pytest.approx(0.05)


def test_zero_limit_uses_the_cost_units():
    lag = GradientLagrange([0.0, 0.5], lr=0.1)
    lag.update([0.3, 0.5])
    assert lag.value == pytest.approx([0.03, 0.0], abs=1e-7)


def test_pid_matches_a_hand_computation():
    # d = 0.5, kp = 1, ki = 0.5, kd = 2, ema 0.5, d_delay 2; costs 1.0, 0.75, 0.25
    lag = PIDLagrange(0.5, kp=1.0, ki=0.5, kd=2.0, d_delay=2, ema_alpha=0.5)
    # t=1: e = 1, c = J/d = 2. I = 0.5. EMAs 0.5, 1.0; corrected /0.5: P_in 1, C 2.
    # history seeded with C = 2: D = max(0, 2 - 2) = 0. lambda_rel = 1 + 0.5 = 1.5
    assert lag.update(1.0)[0] * 0.5 == pytest.approx(1.5)
    # t=2: e = 0.5, c = 1.5. I = 0.75. EMA_e = 0.25 + 0.25 = 0.5, /0.75 -> 2/3.
    # EMA_c = 0.5 + 0.75 = 1.25, /0.75 -> 5/3; history [2, 2]: D = max(0, 5/3 - 2) = 0
    assert lag.update(0.75)[0] * 0.5 == pytest.approx(2 / 3 + 0.75)
    # t=3: e = -0.5, c = 0.5. I = 0.5. EMA_e = 0.25 - 0.25 = 0, P = 0.
    # EMA_c = 0.625 + 0.25 = 0.875, /0.875 -> 1.0; history [2, 5/3]: D = 0
    assert lag.update(0.25)[0] * 0.5 == pytest.approx(0.5)


def test_pid_derivative_looks_d_delay_updates_back():
    # d = 1, kd = 1, no smoothing, d_delay 2: D_t = max(0, c_t - c_{t-2}), history seeded by c_1
    lag = PIDLagrange(1.0, kp=0.0, ki=0.0, kd=1.0, d_delay=2, ema_alpha=0.0)
    assert lag.update(0.2)[0] == 0.0  # history [0.2, 0.2]
    assert lag.update(0.5)[0] == pytest.approx(0.3)  # 0.5 - 0.2; history [0.2, 0.5]
    assert lag.update(0.6)[0] == pytest.approx(0.4)  # 0.6 - 0.2 (two back), not 0.6 - 0.5
    assert lag.update(0.7)[0] == pytest.approx(0.2)  # 0.7 - 0.5


def test_pid_derivative_sees_the_cost_beyond_the_violation_cap():
    # the cap (1: a cost at twice the limit or more counts as twice) holds the integral back,
    # not the derivative: a cost rising from 3 to 5 limits still moves it by 2 limits
    lag = PIDLagrange(0.1, kp=0.0, ki=0.0, kd=1.0, d_delay=1, ema_alpha=0.0, max_violation=1.0)
    assert lag.update(0.3)[0] == 0.0
    lag.update(0.5)
    assert lag.relative_value.item() == pytest.approx(2.0, rel=1e-5)


def test_pid_derivative_reacts_to_a_rising_cost_only():
    lag = PIDLagrange(1.0, kp=0.0, ki=0.0, kd=1.0, d_delay=1, ema_alpha=0.0)
    assert lag.update(0.5)[0] == 0.0  # seeded history: no derivative at the first sample
    assert lag.update(0.8)[0] == pytest.approx(0.3)  # rising by 0.3 (in limits)
    assert lag.update(0.2)[0] == 0.0  # falling: the derivative term is clamped at 0


def test_pid_integral_is_clamped_to_the_upper_bound():
    lag = PIDLagrange(0.1, kp=0.0, ki=1.0, kd=0.0, upper_bound=2.0)
    for _ in range(50):
        lag.update(1.0)  # e = 9 per update: far past the bound without the clamp
    assert lag.value[0] == pytest.approx(2.0)
    assert lag.integral.item() == pytest.approx(2.0 * 0.1)
    lag.update(0.0)  # e = -1: an unclamped integral (18) would hold lambda at the bound
    assert lag.value[0] == 0.0
    assert lag.integral.item() == pytest.approx(0.0)  # 0.2 - 1 clamped at 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: GradientLagrange(0.2, lr=0.05),
        lambda: PIDLagrange(0.2, kp=0.5, ki=0.1, kd=0.1, d_delay=3),
    ],
)
def test_lambda_rises_over_the_limit_and_falls_back_to_zero(make):
    lag = make()
    assert lag.value.tolist() == [0.0]
    history = [lag.update(0.5)[0] for _ in range(30)]
    assert all(b >= a for a, b in itertools.pairwise(history))
    assert history[-1] > history[0] > 0
    for _ in range(300):
        lag.update(0.0)
    assert lag.value.tolist() == [0.0]


def test_lagrange_bounds_and_validation():
    lag = GradientLagrange([0.1, 0.5], lr=1.0, upper_bound=2.0)
    for _ in range(50):
        lag.update([1.0, 0.0])
    assert lag.value[0] == pytest.approx(2.0) and lag.value[1] == 0.0
    with pytest.raises(ValueError, match="expected 2 mean costs"):
        lag.update(0.3)
    with pytest.raises(ValueError, match=">= 0"):
        GradientLagrange(0.1, init=-1)
    with pytest.raises(ValueError, match="cost_limit"):
        GradientLagrange(-0.1)
    with pytest.raises(ValueError, match="d_delay"):
        PIDLagrange(0.1, d_delay=0)
    with pytest.raises(ValueError, match="ema_alpha"):
        PIDLagrange(0.1, ema_alpha=1.0)
    with pytest.raises(ValueError, match="expected 2 cost limits"):
        lag.set_cost_limit(0.3)


def test_init_is_in_reward_per_unit_of_cost():
    assert GradientLagrange(0.2, init=1.5).value[0] == pytest.approx(1.5)
    assert PIDLagrange(0.2, init=1.5).value[0] == pytest.approx(1.5)


def test_pid_history_of_another_length_loads():
    lag = PIDLagrange(0.2, d_delay=4)
    for c in (0.3, 0.4, 0.5):
        lag.update(c)
    state = lag.state_dict()
    shorter = PIDLagrange(0.2, d_delay=2)
    shorter.load_state_dict(state)
    assert th.equal(shorter.history, state["history"][-2:])
    longer = PIDLagrange(0.2, d_delay=6)
    longer.load_state_dict(state)
    assert th.equal(longer.history[-4:], state["history"])
    assert th.equal(longer.history[:2], state["history"][:1].expand(2, -1))
    assert np.array_equal(longer.value, lag.value)


def test_optimistic_ascent_matches_a_hand_computation():
    lag = GradientLagrange(0.1, lr=0.1, optimism=1.0)
    # first update has no previous violation: a plain step, e = (0.2 - 0.1) / 0.1 = 1
    # -> lambda_rel = 0.1 -> lambda = 1.0
    assert lag.update(0.2)[0] == pytest.approx(1.0, abs=1e-6)
    # e = 0.5: direction 0.5 + 1 * (0.5 - 1) = 0 -> lambda stays at 1.0 although over the limit
    assert lag.update(0.15)[0] == pytest.approx(1.0, abs=1e-6)
    # e = 0: direction 0 + (0 - 0.5) = -0.5 -> lambda_rel = 0.1 - 0.05 -> lambda 0.5
    assert lag.update(0.1)[0] == pytest.approx(0.5, abs=1e-6)
    # optimism 0 is plain projected gradient ascent, step for step
    zero, relative = GradientLagrange(0.1, lr=0.1, optimism=0.0, max_violation=None), 0.0
    for c in (0.3, 0.05, 0.12, 0.2):
        relative = max(0.0, relative + 0.1 * (c - 0.1) / 0.1)
        assert zero.update(c)[0] * 0.1 == pytest.approx(relative, abs=1e-7)
    with pytest.raises(ValueError, match="optimism"):
        GradientLagrange(0.1, optimism=-1.0)


def test_optimistic_ascent_telescopes_to_integral_plus_proportional():
    # away from the projection, lambda_rel_t = lr * sum(e) + lr * optimism * (e_t - e_0)
    lr, beta, d = 0.05, 3.0, 0.2
    lag = GradientLagrange(d, lr=lr, optimism=beta, init=5.0)
    costs = [0.3, 0.25, 0.4, 0.22, 0.18, 0.35]
    errors = [(c - d) / d for c in costs]
    for t, c in enumerate(costs):
        value = lag.update(c)[0]
        expected = 5.0 * d + lr * sum(errors[: t + 1]) + lr * beta * (errors[t] - errors[0])
        assert value * d == pytest.approx(expected, abs=1e-6)


def test_optimistic_state_round_trips_and_old_state_loads():
    lag = GradientLagrange(0.1, lr=0.1, optimism=2.0)
    for c in (0.3, 0.2):
        lag.update(c)
    copy = GradientLagrange(0.1, lr=0.1, optimism=2.0)
    copy.load_state_dict(lag.state_dict())
    assert copy.update(0.05)[0] == pytest.approx(lag.update(0.05)[0], abs=1e-7)
    # a state saved before the extrapolation existed: no previous violation, a plain step next
    old = {k: v for k, v in lag.state_dict().items() if k not in ("last_error", "steps")}
    fresh = GradientLagrange(0.1, lr=0.1, optimism=2.0)
    fresh.load_state_dict(old)
    before = fresh.value[0]
    assert fresh.update(0.2)[0] == pytest.approx(before + 0.1 * 1.0 / 0.1, abs=1e-6)


@pytest.mark.parametrize("kind", ["gradient", "pid"])
def test_a_tight_budget_does_not_wind_lambda_up(kind):
    # Ten updates at ten limits over (a search's start at a tight budget), then a policy at
    # half its limit. Capped at one budget's worth, the ten updates add 10 * 0.05 = 0.5 to
    # lambda_rel, which half a budget under the limit (-0.5 per update, 0.025) unwinds in 20
    # updates; uncapped they would add 4.5 and take 180.
    def make(max_violation):
        if kind == "gradient":
            return GradientLagrange(0.05, lr=0.05, optimism=0.0, max_violation=max_violation)
        return PIDLagrange(0.05, kp=0.0, ki=0.05, ema_alpha=0.0, max_violation=max_violation)

    capped, uncapped = make(1.0), make(None)
    for _ in range(10):
        capped.update(0.5)
        uncapped.update(0.5)
    assert capped.relative_value.item() == pytest.approx(0.5, rel=1e-5)
    assert uncapped.relative_value.item() == pytest.approx(4.5, rel=1e-5)
    for _ in range(19):
        capped.update(0.025)
        uncapped.update(0.025)
    assert capped.relative_value.item() == pytest.approx(0.025, rel=1e-4)
    capped.update(0.025)
    assert capped.value.tolist() == [0.0]  # unwound: the policy may use its budget again
    assert uncapped.relative_value.item() == pytest.approx(4.5 - 19 * 0.025, rel=1e-5)
    with pytest.raises(ValueError, match="max_violation must be a positive number"):
        make(0.0)
