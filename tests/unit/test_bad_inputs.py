"""Bad input, as a new user gives it: each broken config, data file, prompt file or run
directory is refused by `llm2llm check` (the preflight `run` and `compare` share) with exit
status 2 and one message naming the file, row or field and the fix; none with a traceback,
none after anything was written.

`python -m tests.unit.test_bad_inputs` prints the battery's table (input, exit status,
message).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["negative", "positive"]


def good_rows(n: int = 24, start: int = 0) -> list[dict]:
    words = ["dull", "fine", "odd", "warm", "slow", "bright", "grim", "kind"]
    return [{"sentence": f"review {i}: a {words[i % len(words)]} film, scene {i}",
             "label": i % 2} for i in range(start, start + n)]


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def config(train: str, test: str, task: str = "", top: str = "") -> str:
    """The custom classification task of jobs/configs/custom_classification.yaml."""
    return (f"tasks:\n  - name: movie\n    type: classification\n    labels: {LABELS}\n"
            f"    label_names: {{'0': negative, '1': positive}}\n"
            f"    fields: {{text: sentence, label: label}}\n"
            f"    data: {{train: '{train}', test: '{test}'}}\n    n_seed: 8\n{task}"
            f"rounds: 2\n{top}")


class Case:
    """One broken input: `build(tmp)` writes what it needs and returns (config text,
    overrides); `expect` is part of the message."""

    def __init__(self, name, build, expect, env=None):
        self.name, self.build, self.expect, self.env = name, build, expect, env or {}


def with_train(rows, task="", top="", suffix=".jsonl", raw: bytes | None = None):
    def build(tmp: Path):
        train = tmp / f"train{suffix}"
        if raw is not None:
            train.write_bytes(raw)
        else:
            write_jsonl(train, rows)
        test = write_jsonl(tmp / "test.jsonl", good_rows(10, start=100))
        return config(str(train), test, task, top), []
    return build


def with_test(rows):
    def build(tmp: Path):
        train = write_jsonl(tmp / "train.jsonl", good_rows())
        return config(train, write_jsonl(tmp / "test.jsonl", rows)), []
    return build


def good(task="", top="", overrides=()):
    def build(tmp: Path):
        train = write_jsonl(tmp / "train.jsonl", good_rows())
        test = write_jsonl(tmp / "test.jsonl", good_rows(10, start=100))
        return config(train, test, task, top).replace("{tmp}", str(tmp)), list(overrides)
    return build


def raw_config(text):
    return lambda tmp: (text, [])


def prompt_file(text):
    def build(tmp: Path):
        (tmp / "prompts.yaml").write_text(text)
        return good(task=f"    prompts: {tmp / 'prompts.yaml'}\n")(tmp)
    return build


def run_dir_with(make):
    def build(tmp: Path):
        target = tmp / "existing"
        make(target)
        return good()(tmp)[0], [f"run_dir={target}"]
    return build


def deep_json(tmp):  # a JSON line nested 200,000 deep
    return with_train(good_rows() + ["[" * 200_000 + "]" * 200_000])(tmp)


def parquet_not(tmp):
    return with_train([], suffix=".parquet", raw=b"PAR1 this is not a parquet file PAR1")(tmp)


def conflicting(tmp):
    rows = good_rows(8) + [{"sentence": r["sentence"], "label": 1 - r["label"]}
                           for r in good_rows(8)]
    return with_train(rows, task="    n_seed: 16\n")(tmp)


def shared_with_train(tmp):
    train = write_jsonl(tmp / "train.jsonl", good_rows())
    return config(train, write_jsonl(tmp / "test.jsonl", good_rows(12))), []


def pair_task(tmp):
    rows = [{"p": f"premise {i} is about a cat", "h": "" if i == 3 else f"hypothesis {i} here",
             "label": i % 2} for i in range(20)]
    train = write_jsonl(tmp / "train.jsonl", rows)
    text = config(train, train).replace("fields: {text: sentence, label: label}",
                                        "fields: {text: p, text_b: h, label: label}")
    return text, []


CASES = [
    # the config file and its overrides
    Case("config not YAML", raw_config("tasks: [\n"), "not valid YAML"),
    Case("config a list", raw_config("- a\n- b\n"), "top level must be a mapping, got list"),
    Case("top-level key typo", good(top="roundz: 3\n"),
         "roundz: unknown key; did you mean 'rounds'?"),
    Case("nested key typo", good(top="train: {lrr: 0.001}\n"),
         "train.lrr: unknown key; did you mean 'lr'?"),
    Case("override key typo", good(overrides=["teacher.temprature=0.5"]),
         "teacher.temprature: unknown key; did you mean 'temperature'?"),
    Case("override value of the wrong type", good(overrides=["rounds=many"]),
         "rounds: Input should be a valid integer"),
    Case("rounds: 0", good(overrides=["rounds=0"]), "rounds: Input should be greater than"),
    Case("seed_fraction above 1", good(task="    seed_fraction: 1.5\n"),
         "seed_fraction: Input should be less than or equal to 1"),
    Case("built-in task name typo", raw_config("tasks: [{name: sst}]\n"),
         "tasks.sst: unknown task; did you mean 'sst2'?"),
    Case("strategy name typo", good(top="strategy: {name: llm2lm}\n"),
         "unknown strategy 'llm2lm'; did you mean 'llm2llm'?"),
    Case("task name leaving run_dir", lambda tmp: (good()(tmp)[0].replace(
        "name: movie", "name: ../movie"), []), "cannot name a folder under run_dir"),
    Case("label_names to an unknown label", lambda tmp: (good()(tmp)[0].replace(
        "'1': positive", "'1': upbeat"), []), "label_names: maps to ['upbeat']"),
    Case("a text_b mapping without text_names", lambda tmp: (good()(tmp)[0].replace(
        "fields: {text: sentence, label: label}",
        "fields: {text: sentence, text_b: sentence, label: label}"), [
            "tasks.0.text_names=[One]"]), "text_names"),
    # the run directory
    Case("run_dir is /", good(overrides=["run_dir=/"]), "is the filesystem's root: a run writes"),
    Case("run_dir is a file", run_dir_with(lambda p: p.write_text("x")), "is a file"),
    Case("run_dir holds a config.yaml that is no run's",
         run_dir_with(lambda p: (p.mkdir(), (p / "config.yaml").write_text("- a list\n"))),
         "holds a config.yaml that is not a run's record"),
    # data files
    Case("train file missing (relative path)", lambda tmp: (config(
        "no/such/train.jsonl", str(tmp / "t.jsonl")), []),
        "does not exist, read from the working directory"),
    Case("train path is a directory", lambda tmp: (config(str(tmp), str(tmp)), []),
         "is a directory; name a .jsonl/.parquet file in it"),
    Case("train file of another format", with_train(good_rows(), suffix=".csv"),
         "must end in .jsonl or .parquet"),
    Case("validation file missing", good(task="    n_validation: 4\n", overrides=[
        "tasks.0.data.validation=/no/such/validation.jsonl"]),
         "data.validation: data file '/no/such/validation.jsonl' does not exist"),
    Case("empty train file", with_train([]), "n_seed is 8 but"),
    Case("empty test file", with_test([]), "no test rows"),
    Case("malformed JSON line", with_train(good_rows() + ["{not json"]),
         "train.jsonl:25: malformed JSON line"),
    Case("a JSON line that is a list", with_train(good_rows() + ["[1, 2]"]),
         "train.jsonl:25: expected a JSON object, got list"),
    Case("a JSON line nested 200,000 deep", deep_json, "JSON nested too deeply"),
    Case("bytes that are not UTF-8", with_train([], raw=(json.dumps(good_rows(1)[0]) + "\n")
                                                .encode() + b'{"sentence": "caf\xe9 film is fine",'
                                                          b' "label": 1}\n'),
         "train.jsonl:2: not UTF-8 (byte 0xe9 at offset"),
    Case("a corrupt Parquet file", parquet_not, "not a readable Parquet file"),
    Case("a row without the text field", with_train(good_rows() + [{"text": "x", "label": 0}]),
         "row 25 has no field 'sentence'"),
    Case("a null text", with_train(good_rows() + [{"sentence": None, "label": 0}]),
         "row 25: field 'sentence' is null"),
    Case("an empty text", with_train(good_rows() + [{"sentence": "  ", "label": 0}]),
         "row 25: its text ('sentence') is empty"),
    Case("a null label", with_train(good_rows() + [{"sentence": "a film", "label": None}]),
         "row 25: field 'label' is null"),
    Case("a label outside labels", with_train(good_rows() + [{"sentence": "a film", "label": 7}]),
         "train.jsonl: row 25: label '7' is not one of"),
    Case("an empty second text of a pair", pair_task, "row 4: its second text ('h') is empty"),
    Case("one text 40 times", with_train([{"sentence": "same old film", "label": 1}] * 40),
         "repeat a text already in it"),
    Case("texts with both labels", conflicting, "have two or more labels"),
    Case("test rows that are train rows", shared_with_train, "a student tested on what it trained on"),
    Case("a 10 MB line", with_train(good_rows() + [{"sentence": "word " * 2_000_000,
                                                    "label": 0}], task="    n_seed: 25\n"),
         "50x more than the student reads"),
    Case("n_seed beyond the data", good(task="    n_seed: 500\n"), "n_seed is 500 but"),
    Case("n_guard beyond the data", good(task="    n_guard: 500\n"), "n_guard is 500 but"),
    # prompt files
    Case("prompt file missing", good(task="    prompts: /no/such/prompts.yaml\n"),
         "prompt file '/no/such/prompts.yaml' does not exist"),
    Case("prompt file without the templates", prompt_file("student: '{text}'\n"),
         "lacks the template(s) teacher_system, teacher_user"),
    Case("prompt file that is a list", prompt_file("- student\n"),
         "must map template names to strings"),
    Case("prompt file not YAML", prompt_file("student: [\n"), "is not valid YAML"),
    # models
    Case("student model path missing", good(overrides=["student.model=/no/such/model"]),
         "model path '/no/such/model' does not exist"),
    # the hub, with no network to it (a closed port answers at once; no network times out)
    Case("hub data with no network", lambda tmp: (
        "tasks: [{name: sst2, data: {train: 'hub:stanfordnlp/sst2@train', "
        "test: 'hub:stanfordnlp/sst2@validation'}}]\n", []),
         "did not answer within", env={"HF_ENDPOINT": "http://127.0.0.1:9"}),
]


def refuse(case: Case, tmp: Path) -> tuple[int, str, Path]:
    """Run `llm2llm check` on the case in-process: (exit status, stderr, run_dir)."""
    text, overrides = case.build(tmp)
    path = tmp / "job.yaml"
    path.write_text(text)
    run_dir = tmp / "run"
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides = [f"run_dir={run_dir}", *overrides]
    err = io.StringIO()
    saved = {k: os.environ.get(k) for k in case.env}
    os.environ.update(case.env)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(["check", str(path), *overrides])
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return status, err.getvalue(), run_dir


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_before_work(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve here, not in the repository
    start = time.monotonic()
    status, stderr, run_dir = refuse(case, tmp_path)
    assert status == 2, stderr
    assert case.expect in stderr, stderr
    assert stderr.startswith("llm2llm: error:") and "Traceback" not in stderr
    assert not run_dir.exists()  # nothing written, so nothing looks started
    assert time.monotonic() - start < 30  # the hub case: seconds, not the library's retries


def test_the_battery_is_at_least_35_inputs():
    assert len(CASES) >= 35


def test_a_byte_order_mark_is_read_as_utf8(tmp_path):
    """A BOM (Windows editors write one) is not part of the first row."""
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in good_rows()).encode())
    test = write_jsonl(tmp_path / "test.jsonl", good_rows(10, start=100))
    path = tmp_path / "job.yaml"
    path.write_text(config(str(train), test))
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["check", str(path), f"run_dir={tmp_path / 'run'}"]) == 0
    assert "config OK" in out.getvalue()


def test_a_few_shared_test_rows_are_left_out_with_a_warning(tmp_path):
    """Real test sets share a few texts with train (TREC: 11 of 500); those are left out of
    the test set, and check says how many and where."""
    train = write_jsonl(tmp_path / "train.jsonl", good_rows(200))
    test = write_jsonl(tmp_path / "test.jsonl", good_rows(1, start=150) + good_rows(9, start=300))
    path = tmp_path / "job.yaml"
    path.write_text(config(train, test, task="    n_seed: 190\n"))
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = main(["check", str(path), f"run_dir={tmp_path / 'run'}"])
    assert status == 0
    assert "1 test row(s) have the text of a seed or validation row" in out.getvalue()
    assert "test.jsonl row 1): left out of the test set" in out.getvalue()


if __name__ == "__main__":  # the battery's table, for notes
    import tempfile

    print("| input | exit status | message |\n| --- | --- | --- |")
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            status, stderr, _ = refuse(case, Path(tmp))
        message = stderr.removeprefix("llm2llm: error: ").replace(tmp, "<tmp>").strip()
        print(f"| {case.name} | {status} | {' '.join(message.split())[:300]} |")
