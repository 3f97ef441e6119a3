"""Opt-in: channel pruning over torchvision's classification zoo (random weights).

32x32 inputs, 224x224 where the architecture needs them (maxvit_t, vit_b_16). Not in the
default suite (about three minutes on 2 cores): run with ``PRUNE_ENV_SLOW=1 pytest
tests/test_zoo_slow.py -s``; ``benchmarks/zoo_check.py`` prints the same table for more
architectures.
"""

import os

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("PRUNE_ENV_SLOW"), reason="set PRUNE_ENV_SLOW=1"),
]

# torch-pruning 1.6's own MagnitudePruner at ratio 0.95 reaches these FLOPs fractions (issue
# 14); the engine must reach under 10% or no more than that.
TP_REACHES = {
    "mobilenet_v2": 0.013,
    "densenet121": 0.004,
    "squeezenet1_1": 0.027,
    "efficientnet_b0": 0.011,
}
ARCHS = [
    "resnet18",
    "mobilenet_v2",
    "squeezenet1_1",
    "densenet121",
    "shufflenet_v2_x0_5",
    "efficientnet_b0",
    "regnet_y_400mf",
    "resnext50_32x4d",
    "googlenet",
    "mnasnet0_5",
]


@pytest.mark.parametrize("arch", ARCHS)
def test_zoo_architecture_prunes(arch):
    from benchmarks.zoo_check import check

    row = check(arch, classes=10, size=32, min_keep=0.05, seed=0)
    print(
        f"{arch}: {row['units']} units, {row['kept_whole']} kept whole, lowest FLOPs "
        f"{row['lowest_flops_fraction']:.4f}, forward {row['forward']}, pruned==masked "
        f"{row['pruned_equals_masked']}, costs exact {row['costs_exact']}, env episode "
        f"cost {row['env_episode_cost']:.4f}"
    )
    assert row["forward"] and row["pruned_equals_masked"] and row["costs_exact"]
    assert row["env_cost_matches"]  # one ModelPrune-v0 episode at min_keep reaches it
    assert row["lowest_flops_fraction"] < max(0.10, TP_REACHES.get(arch, 0.0))


# Transformers: torch-pruning mistakes their window partitions for flattens (Swin, MaxViT)
# and the engine cannot slice LayerNorm, so the groups on the residual stream are kept
# whole; the MLPs' hidden channels (and MaxViT's convolutions) are pruned. Before the engine
# bounded torch-pruning's index mapping, building swin_t grew past 16 GB and maxvit_t
# past 10 GB.
TRANSFORMERS = ["swin_t", "swin_v2_t", "maxvit_t", "vit_b_16"]


@pytest.mark.parametrize("arch", TRANSFORMERS)
def test_zoo_transformer_builds_and_prunes_its_mlps(arch):
    import resource

    from benchmarks.zoo_check import check
    from tests.conftest import deadline

    with deadline(300):  # a runaway build fails here instead of exhausting the machine
        row = check(arch, classes=10, size=32, min_keep=0.05, seed=0)
    assert row["forward"] and row["pruned_equals_masked"] and row["costs_exact"]
    assert row["env_cost_matches"]
    assert row["lowest_flops_fraction"] < 0.5  # the MLPs hold most of the FLOPs
    assert row["engine_seconds"] < 120
    # The process's peak so far (earlier tests included): an upper bound on this one's.
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert peak_gib < 8, f"peak memory {peak_gib:.1f} GiB"
