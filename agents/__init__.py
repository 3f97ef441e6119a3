"""Constrained RL agents: PPO-Lagrangian on stable-baselines3, baselines, and their registry."""

from agents.lagrange import GradientLagrange, LagrangeMultiplier, PIDLagrange, make_lagrange
from agents.ppo_lagrangian import PPOLagrangian

__all__ = [
    "GradientLagrange",
    "LagrangeMultiplier",
    "PIDLagrange",
    "PPOLagrangian",
    "make_lagrange",
]
