"""The job layer above the envs and the agents: prune_env <- agents <- prune_pipeline <- scripts.

- ``prune(model, train_data, budget=..., cost=..., algo=...)``: your model, end to end;
- ``run_job(JobConfig(...))``: what ``train.py`` / ``prune-train`` runs;
- ``load_pruned(run_dir)``: a saved pruned model, from its weights-only form;
- stages (``prune_pipeline.stages``), the task (``prune_pipeline.task``), the run folder
  (``prune_pipeline.run_folder``) and the presets (``prune_pipeline.presets``) for callers
  that compose their own job.
"""

from prune_pipeline.api import prune
from prune_pipeline.config import ConfigError, JobConfig
from prune_pipeline.job import JobResult, run_job
from prune_pipeline.pruned import load_pruned, save_pruned

__all__ = [
    "ConfigError",
    "JobConfig",
    "JobResult",
    "load_pruned",
    "prune",
    "run_job",
    "save_pruned",
]
