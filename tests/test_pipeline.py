"""The job layer: your own model end to end (Python and command line), the configuration
converter, the run folder, the layering of the packages."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from prune_env.constraints import within_budget
from prune_env.data import synthetic_split
from prune_pipeline import load_pruned, prune
from prune_pipeline.config import ConfigError, JobConfig, from_mapping, parse_value
from prune_pipeline.pruned import MODEL_FILE, WEIGHTS_FILE
from prune_pipeline.run_folder import RunFolder, RunFolderError

ROOT = Path(__file__).resolve().parents[1]
FACTORY = """
from torch import nn


def make():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
"""
FAST = {"bn_calib_size": 32, "latency_batch_size": 4, "latency_repeats": 1}


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(FACTORY)
    return path


def _data(n, split="train"):
    s = synthetic_split(split, n=n)
    return s.images, s.labels


def test_prune_delivers_a_smaller_model_and_leaves_yours_alone(tmp_path, factory, home):
    from prune_pipeline.pruned import load_factory

    torch.manual_seed(0)
    model = load_factory(factory, "make")()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune(
        model, _data(256), budget=0.5, cost="flops", algo="random_search", total_timesteps=16,
        test_data=_data(64, "test"), reward_size=64, finetune_epochs=1, device="cpu",
        architecture=f"{factory}:make", out=tmp_path / "runs", progress=False, env_kwargs=FAST,
    )  # fmt: skip
    report = result.report
    base, pruned = report["base"], report["pruned"]
    assert pruned["constraint_satisfied"] and pruned["flops"] <= 0.5 * base["flops"]
    assert sum(p.numel() for p in result.model.parameters()) == pruned["params"]
    assert report["search"]["env_steps"] == 16 and report["model"] == f"{factory}:make"
    # your model: same weights, same place, same mode as before the call
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the weights-only file rebuilds the delivered model; no pickle was needed
    assert (result.run_dir / WEIGHTS_FILE).is_file() and not (result.run_dir / MODEL_FILE).exists()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_pruned(result.run_dir)(x), result.model.eval()(x))


def test_prune_takes_prepared_float_inputs_and_pickles_an_unknown_architecture(tmp_path, home):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    x = torch.randn(96, 1, 8, 8)
    y = torch.randint(0, 3, (96,))
    result = prune(
        model, (x, y), budget=0.6, cost="params", algo="uniform", total_timesteps=4,
        reward_size=32, finetune_epochs=1, device="cpu", out=tmp_path, progress=False,
        env_kwargs=FAST,
    )  # fmt: skip
    assert result.report["pruned"]["constraint_satisfied"]
    assert (result.run_dir / MODEL_FILE).is_file()  # no builder: the pickle is the saved form
    whole = torch.load(result.run_dir / MODEL_FILE, weights_only=False)
    with torch.no_grad():
        assert torch.equal(whole(x[:4]), result.model(x[:4]))


def test_prune_refuses_bad_input_at_its_boundary(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        prune("resnet18", _data(8))
    with pytest.raises(TypeError, match="train_data must be an"):
        prune(model, [1, 2, 3])
    with pytest.raises(ValueError, match="train_data has 4 inputs and 3 labels"):
        prune(model, (torch.zeros(4, 4), torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match="unknown --algo 'ppo_lagrange'"):
        prune(model, (torch.zeros(4, 4), torch.zeros(4, dtype=torch.long)), algo="ppo_lagrange")
    with pytest.raises(ValueError, match="architecture: --model 'nope'"):
        prune(model, (torch.zeros(4, 4), torch.zeros(4, dtype=torch.long)), architecture="nope")


def _cli(script, *args, home):
    env = {**os.environ, "PRUNE_ENV_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_train_prunes_a_model_from_a_factory_file(tmp_path, factory):
    out = tmp_path / "runs"
    proc = _cli("train.py", "--model", f"{factory}:make", "--dataset", "synthetic",
                "--base-epochs", "1", "--reward-size", "64", "--total-timesteps", "16",
                "--algo", "random_search", "--finetune-epochs", "1", "--test-size", "128",
                "--device", "cpu", "--no-progress", "--out", out,
                "--env-kwargs", json.dumps(FAST), home=tmp_path / "home")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "held out for the reward" in proc.stdout  # the base model is trained visibly
    (run_dir,) = out.iterdir()
    assert run_dir.name.startswith("ModelPrune-v0__random_search__0__")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["model"] == f"{factory}:make" and report["pruned"]["keep_ratios"]
    arch = json.loads((run_dir / "pruned_arch.json").read_text())
    assert arch["builder"] == {"kind": "factory", "path": str(factory), "name": "make"}
    assert arch["weights_only_verified"] is True
    # evaluate.py rebuilds the same task from the run folder (the base model the job trained,
    # from its cache: not trained again) and re-measures the model
    (cached,) = (tmp_path / "home" / "checkpoints").glob("user-make-*.pt")
    again = _cli("evaluate.py", run_dir, "--no-progress", home=tmp_path / "home")
    assert again.returncode == 0, again.stderr
    assert "matches the report" in again.stdout and "held out for the reward" not in again.stdout
    assert list((tmp_path / "home" / "checkpoints").glob("user-*.pt")) == [cached]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet1800", "--dataset", "synthetic"], "neither path/to/file.py:factory"),
        (["--model", "x.py:make", "--env", "VGG16Prune-v0"], "not --env VGG16Prune-v0"),
        (["--model", "resnet18"], "--model needs --data-dir"),
        (["--model", "missing.py:make", "--dataset", "synthetic"], "does not exist"),
        (["--env-kwargs", "[1, 2]"], "--env-kwargs must be a JSON object"),
        (["--budget", "x"], "--budget expects a float"),
        (["--resume", "."], "not a run folder"),
        (["--base-numerics", "fast"], "unknown --base-numerics 'fast'"),
    ],
)
def test_train_refuses_bad_options_with_a_clear_message(tmp_path, args, message):
    proc = _cli("train.py", *args, "--no-progress", "--out", tmp_path, home=tmp_path)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_the_job_refuses_a_budget_outside_0_1_through_the_one_check(budget):
    with pytest.raises(ConfigError, match=r"--budget must be a number in \(0, 1\]"):
        JobConfig(budget=budget).validate()
    assert JobConfig(budget=1.0).validate().budget == 1.0


def test_the_converter_reads_every_field_kind():
    assert parse_value(JobConfig, "total_timesteps", "96") == 96
    assert parse_value(JobConfig, "budget", "0.25") == 0.25
    assert parse_value(JobConfig, "progress", "false") is False
    assert parse_value(JobConfig, "algo_kwargs", '{"n_steps": 8}') == {"n_steps": 8}
    assert parse_value(JobConfig, "algo_kwargs", {"n_steps": 8}) == {"n_steps": 8}  # typed
    assert parse_value(JobConfig, "model", "resnet18") == "resnet18"
    with pytest.raises(ConfigError, match=r"--algo-kwargs expects a dict"):
        parse_value(JobConfig, "algo_kwargs", "{n_steps: 8}")
    with pytest.raises(ConfigError, match=r"unknown options \['nope'\]"):
        from_mapping(JobConfig, {"nope": 1})
    # old run folders stored the JSON options as text: they still load
    old = JobConfig.from_saved({"env": "VGG11Prune-v0", "algo_kwargs": '{"n_steps": 8}'})
    assert old.algo_kwargs == {"n_steps": 8}


def test_a_checkpoint_commit_is_atomic_and_drops_older_files(tmp_path):
    run = RunFolder.create(tmp_path, "r", {"config": {}})
    run.commit_checkpoint({"agent": ("agent-8.zip", b"a8")}, {"num_timesteps": 8})
    run.commit_checkpoint({"agent": ("agent-16.zip", b"a16")}, {"num_timesteps": 16})
    state = run.checkpoint_state()
    assert state == {"num_timesteps": 16, "files": {"agent": "agent-16.zip"}}
    assert sorted(p.name for p in (run.path / "checkpoint").iterdir()) == [
        "agent-16.zip", "state.json",
    ]  # fmt: skip
    run.write_report({"done": True}, "# done")
    assert run.is_complete and not (run.path / "checkpoint").exists()
    with pytest.raises(RunFolderError, match="not a run folder"):
        RunFolder.open(tmp_path)


PACKAGES = ("prune_env", "agents", "prune_pipeline")
CONSTRAINTS = ROOT / "prune_env" / "constraints.py"
# a midpoint of two names, as a bisection writes it: (lo + hi) / 2
MIDPOINT = re.compile(r"\(\s*[A-Za-z_]\w*\s*\+\s*[A-Za-z_]\w*\s*\)\s*/\s*2\b")


def _package_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _cost_budget_comparisons(path: Path) -> list[str]:
    """Order comparisons of a cost with a budget or limit (what ``within_budget`` is for)."""
    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(
            isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops
        ):
            continue
        sides = [ast.get_source_segment(source, n) or "" for n in (node.left, *node.comparators)]
        bound = [bool(re.search("budget|limit", s, re.IGNORECASE)) for s in sides]
        cost = [bool(re.search("cost", s, re.IGNORECASE)) for s in sides]
        # a side naming both (``self.cost_limit``) is a bound, not a cost
        if any(bound) and any(c and not b for c, b in zip(cost, bound, strict=True)):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_constraints_have_one_home():
    """The feasibility test, the bisection onto a budget and the verdict after fine-tuning are
    written once, in prune_env.constraints, and every module of the packages uses them."""
    assert within_budget(0.1 + 1e-13, 0.1) and not within_budget(0.1 + 1e-9, 0.1)
    modules = [p for p in _package_modules() if p != CONSTRAINTS]
    assert len(modules) > 30  # every module, wherever it lives
    for path in modules:
        text, name = path.read_text(), path.relative_to(ROOT)
        assert not MIDPOINT.search(text), f"{name} bisects on its own"
        assert not re.search(r'[!=]=\s*"latency"', text), f"{name} exempts latency on its own"
    assert not [c for p in modules for c in _cost_budget_comparisons(p)]
    assert _cost_budget_comparisons(CONSTRAINTS)  # the check does see a plain comparison
    for path in ("prune_pipeline/stages.py", "prune_pipeline/evaluation.py"):
        assert "final_verdict(" in (ROOT / path).read_text(), path


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_layers_prune_env_then_agents_then_pipeline_then_scripts():
    scripts = {"train", "evaluate", "benchmark"}
    above = {"prune_env": {"agents", "prune_pipeline"}, "agents": {"prune_pipeline"},
             "prune_pipeline": set()}  # fmt: skip
    for package, forbidden in above.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = _imports(path) & (forbidden | scripts)
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    for path in [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").glob("*.py")]:
        assert not _imports(path) & scripts, f"{path.relative_to(ROOT)} imports a script"
        assert "sys.path.insert(" not in path.read_text().replace('"sys.path.insert("', ""), path


def test_importing_the_plots_leaves_matplotlib_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); import prune_pipeline.plots; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_env_kwargs_cannot_override_what_has_an_option():
    # the job prepares the base model from --width-mult etc.: an env_kwargs copy would make
    # the env load a base model of other settings (or a checkpoint of another width)
    for key, option in (
        ("width_mult", "--width-mult"),
        ("checkpoint", "--checkpoint"),
        ("base_numerics", "--base-numerics"),
    ):
        with pytest.raises(ConfigError, match=f"use {option} instead"):
            JobConfig(env_kwargs={key: 1}).validate()
    assert JobConfig(env_kwargs={"bn_calib_size": 64}).validate().env_kwargs["bn_calib_size"] == 64
    with pytest.raises(ConfigError, match="--base-numerics applies to the base models"):
        JobConfig(model="x.py:make", base_numerics="portable").validate()


def test_the_job_prepares_its_base_with_the_numerics_asked_for(monkeypatch):
    import prune_pipeline.task as task

    seen = []

    class Stop(Exception):
        pass

    def fake_prepare(*args, **kwargs):
        seen.append(args[9] if len(args) > 9 else kwargs.get("numerics"))
        raise Stop

    monkeypatch.setattr(task, "prepare_base_model", fake_prepare)
    for numerics in ("portable", "default"):
        cfg = JobConfig(env="VGG11Prune-v0", base_numerics=numerics, dataset="synthetic")
        with pytest.raises(Stop):
            task.make_task(cfg.validate())
    assert seen == ["portable", "default"]
