"""One typed config tree, loaded from YAML with `a.b=c` overrides.

Every problem is collected and reported at once, each with its dotted path, before Ray starts.
Each setting is documented once, in its `Field(description=...)`: `llm2llm config` prints them.

    base.py      Strict (unknown keys refused), the built-in model names
    tasks.py     tasks: where a task's rows come from and how they read
    strategy.py  strategy, compare, stop: what a round asks the teacher, when a unit stops
    roles.py     student and teacher: models, vLLM engines, the API teacher, gates, LoRA
    run.py       RunConfig, the whole job, with its train, ray and tracking sections
    loading.py   load_config (YAML + overrides), and the listing `llm2llm config` prints

Everything is imported from here: `from engine.config import RunConfig`.
"""

from engine.config.base import DEFAULT_ENCODER, DEFAULT_MODEL, Strict
from engine.config.loading import describe_settings, did_you_mean, load_config, parse_override
from engine.config.roles import (LORA_LR, LORA_TARGETS, ApiConfig, GenerationConfig,
                                 LabelFitConfig, LoraConfig, Prices, StudentConfig,
                                 TeacherConfig)
from engine.config.run import (RayConfig, RunConfig, TrackingConfig, TrainConfig,
                               import_plugins)
from engine.config.strategy import (SWITCHES, CompareConfig, StopConfig, StrategyConfig,
                                    strategy_variant, switch_help)
from engine.config.tasks import DataConfig, SamplingOverride, TaskConfig

__all__ = ["DEFAULT_ENCODER", "DEFAULT_MODEL", "LORA_LR", "LORA_TARGETS", "SWITCHES",
           "ApiConfig", "CompareConfig", "DataConfig", "GenerationConfig", "LabelFitConfig",
           "LoraConfig", "Prices", "RayConfig", "RunConfig", "SamplingOverride", "StopConfig",
           "StrategyConfig", "Strict", "StudentConfig", "TaskConfig", "TeacherConfig",
           "TrackingConfig", "TrainConfig", "describe_settings", "did_you_mean",
           "import_plugins", "load_config", "parse_override", "strategy_variant",
           "switch_help"]
