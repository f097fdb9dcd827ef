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
