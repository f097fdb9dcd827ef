"""A strategy is one module: defined and registered here, with no edit elsewhere, it is
accepted by the config, listed by `llm2llm compare --help`, checked at preflight, and runs
its rounds through the same loop as the built-in ones."""

from __future__ import annotations

import contextlib
import io

import pyarrow as pa
import pytest

from engine.cli import build_parser
from engine.config import SWITCHES, load_config
from engine.errors import ConfigError
from engine.strategies import REGISTRY, RoundView, Strategy, register
from tests.unit.test_strategies import compare_loop


class EveryOther(Strategy):
    """Asks about every other error (a made-up baseline): the smallest strategy there is."""

    name = "every_other"
    summary = "every other error, for a registry test"

    def targets(self, view: RoundView) -> pa.Table:
        return view.errors.take(list(range(0, view.errors.num_rows, 2)))

    @classmethod
    def task_problems(cls, task, index: int) -> list[str]:
        return [] if task.name != "refused" else [f"tasks.{index}: every_other refuses it"]


@pytest.fixture
def every_other():
    register(EveryOther)
    yield EveryOther
    del REGISTRY[EveryOther.name]


def compare_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--help"])
    return out.getvalue()


def test_compare_help_lists_every_strategy_and_switch_by_name():
    text = compare_help()
    for name, cls in REGISTRY.items():
        assert f"  {name} " in text and cls.summary in text
    for switch in [*SWITCHES, "share=X"]:
        assert f"  {switch} " in text


def test_a_registered_strategy_is_accepted_listed_and_runs_a_round(tmp_path, every_other):
    cfg = load_config(None, ["tasks=[{name: arithmetic}]", "strategy.name=every_other",
                             "compare.strategies=[llm2llm,every_other+one_shot]"])
    assert cfg.strategy.name == "every_other"
    assert "every_other" in compare_help() and EveryOther.summary in compare_help()
    _, history, gen_t, _ = compare_loop(tmp_path, ["llm2llm", "every_other"], seeds=[0],
                                        rounds=2)
    mine = next(m for m in history if m["strategy"] == "every_other" and m["round"] == 0)
    theirs = next(m for m in history if m["strategy"] == "llm2llm" and m["round"] == 0)
    assert mine["n_errors"] == theirs["n_errors"] > 1  # the same round-0 student
    asked = [c[2] for c in gen_t.calls if c[0] == "augment"]
    assert [t.num_rows for t in asked] == [theirs["n_errors"], (theirs["n_errors"] + 1) // 2]


def test_an_unregistered_name_is_refused_with_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'every_other'; use one of llm2llm"):
        load_config(None, ["tasks=[{name: arithmetic}]", "strategy.name=every_other"])
    with pytest.raises(ConfigError, match="'every_other\\+one_shot': unknown strategy"):
        load_config(None, ["tasks=[{name: arithmetic}]", "compare.strategies=[every_other+one_shot]"])


def test_preflight_asks_the_strategy_what_a_task_lacks(tmp_path, every_other):
    from engine.job import preflight

    config = tmp_path / "job.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\nstrategy: {{name: every_other}}\n"
                      f"tasks: [{{name: refused, type: arithmetic, n_seed: 4}}]\n")
    with pytest.raises(ConfigError, match="every_other refuses it"):
        preflight(str(config), [], resolve_models=False)


def test_a_name_registered_twice_is_refused(every_other):
    class Impostor(Strategy):
        name = "every_other"

    with pytest.raises(ValueError, match="registered twice"):
        register(Impostor)


@pytest.fixture
def plugin_unloaded():
    """The plugin fixture's module imported afresh by the test, and forgotten after it."""
    import sys

    yield "tests.plugins.first_error"
    REGISTRY.pop("first_error", None)
    sys.modules.pop("tests.plugins.first_error", None)


def test_a_strategy_outside_the_package_comes_in_through_plugins(tmp_path, plugin_unloaded):
    from engine.strategies import saved_units

    with pytest.raises(ConfigError, match="unknown strategy 'first_error'"):
        load_config(None, ["tasks=[{name: arithmetic}]", "strategy.name=first_error"])
    cfg = load_config(None, ["tasks=[{name: arithmetic}]", f"plugins=[{plugin_unloaded}]",
                             "compare.strategies=[llm2llm,first_error]"])
    assert cfg.plugins == [plugin_unloaded] and "first_error" in compare_help()
    # status and inspect list a saved run's units from its plain config, plugins included
    del REGISTRY["first_error"]
    import sys
    sys.modules.pop(plugin_unloaded)
    units = saved_units(cfg.model_dump())
    assert [key for key, _ in units] == ["arithmetic/llm2llm/seed_0",
                                         "arithmetic/first_error/seed_0", *[
                                         f"arithmetic/{n}/seed_{s}" for s in (1, 2)
                                         for n in ("llm2llm", "first_error")]]


def test_a_plugin_that_does_not_import_is_named_with_the_fix():
    with pytest.raises(ConfigError, match="plugins: cannot import 'no_such.module' "
                                          r"\(ModuleNotFoundError.*PYTHONPATH"):
        load_config(None, ["tasks=[{name: arithmetic}]", "plugins=[no_such.module]"])
