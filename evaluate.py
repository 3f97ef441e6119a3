"""Re-measure a finished run, compare it with other pruning methods, or roll its agent out
(the logic is prune_pipeline.evaluation; installed as ``prune-evaluate``).

    python evaluate.py RUN_DIR                       # re-measure the saved pruned model
    python evaluate.py RUN_DIR --compare uniform,magnitude_global,random_search,amc
    python evaluate.py RUN_DIR --agent RUN_DIR/agent.zip --episodes 20
"""

import sys

from prune_pipeline.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
