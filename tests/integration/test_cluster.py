"""`ray job submit` to a local two-node cluster without token auth (cluster/README.md, "Local
head", the second block). The job checks the demo config: the submission, the uploaded working
directory and the job's environment are what is tested here; test_two_rounds.py runs a whole
job on a token-auth cluster."""

from pathlib import Path

import pytest
import yaml

from tests.cluster import LocalCluster

pytestmark = pytest.mark.integration


def test_a_job_submitted_without_token_auth_runs(tmp_path):
    with LocalCluster(tmp_path / "home", token=False, head_cpus=2, worker_cpus=1) as cluster:
        assert len(cluster.nodes()) == 2
        out = cluster.submit(["python", "-m", "engine.cli", "check", "jobs/configs/demo.yaml"],
                             timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    rounds = yaml.safe_load(Path("jobs/configs/demo.yaml").read_text())["rounds"]
    assert f"config OK: 1 task(s), {rounds} round(s)" in out.stdout
    assert not (tmp_path / "home" / ".ray" / "auth_token").exists()  # no token was needed
