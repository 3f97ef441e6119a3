"""Prune a network with constrained RL, end to end (the job is prune_pipeline.job).

    python train.py --env VGG16Prune-v0                                # CPU demo (--preset quick)
    python train.py --env VGG16Prune-v0 --preset paper --device cuda   # paper scale, GPU
    python train.py --model resnet18 --data-dir DATA --budget 0.3 --cost flops   # your model

Installed as the ``prune-train`` command; ``--help`` lists every option, docs/job.md says
what the run folder holds.
"""

import sys

from prune_pipeline.job import main

if __name__ == "__main__":
    sys.exit(main())
