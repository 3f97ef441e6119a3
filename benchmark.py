"""Compare constrained RL algorithms on the pruning envs (the harness is prune_pipeline.bench;
installed as ``prune-benchmark``).

    python benchmark.py --envs VGG16PruneSurrogate-v0 --algos ppo_lag,ppo_pid_lag,random_search
    python benchmark.py --config bench.yaml        # the same, from YAML (per-env overrides)
"""

import sys

from prune_pipeline.bench import main

if __name__ == "__main__":
    sys.exit(main())
