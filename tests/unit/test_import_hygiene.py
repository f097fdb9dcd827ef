import subprocess
import sys

HEAVY = ["torch", "vllm", "deepspeed", "transformers", "ray"]


def test_import_engine_loads_no_heavy_library():
    # A fresh interpreter: pytest's own process may already have imported anything.
    code = ("import sys, engine, engine.config, engine.tasks, engine.driver, engine.job, "
            "engine.cli, engine.stages.augment, engine.generation.pipeline, "
            "engine.generation.backend, engine.generation.replica_backend, "
            "engine.generation.openai_api, engine.generation.encoder, "
            "engine.backends.deepspeed_trainer, engine.models, engine.rerun, engine.provenance, "
            "engine.sampling, engine.gates\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_training_workers_import_deepspeed_without_mlflow():
    # DeepSpeed's autotuner imports mlflow when it is installed (2.7 s of every training
    # worker's start here); the trainer's import skips it and leaves mlflow importable.
    code = ("import sys\n"
            "from engine.backends.deepspeed_trainer import import_deepspeed\n"
            "ds = import_deepspeed()\n"
            "from deepspeed.autotuning import autotuner\n"
            "print(ds.__name__, 'mlflow' in sys.modules, autotuner.has_mlflow)\n"
            "import mlflow\n"
            "print(mlflow.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # (DeepSpeed logs its accelerator on stdout first)
    assert out.stdout.splitlines()[-2:] == ["deepspeed False False", "mlflow"], out.stdout
