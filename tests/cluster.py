"""A real Ray cluster of two nodes on this machine, started with the commands of
cluster/README.md ("Local head"), for integration tests that submit jobs with `ray job submit`.

Each node is a `ray start --block` process: stopping it stops only that node's processes
(never another Ray instance on the machine, as `ray stop` would). Ports are free ones picked
here, so a test cluster never collides with a local instance that is already running. HOME is
a fresh folder, as on a new machine: the token of token auth is generated there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # ray and python of this environment
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`with LocalCluster(tmp, token=True) as c: c.submit([...])`: a head of `head_cpus`
    CPUs and a worker node of `worker_cpus` CPUs carrying `worker_resources` (a custom label)."""

    def __init__(self, home: Path, token: bool, head_cpus: int = 6, worker_cpus: int = 2,
                 worker_resources: dict | None = None, worker_env: dict | None = None):
        self.home, self.token = home, token
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.worker_resources = worker_resources or {}
        self.worker_env = worker_env or {}  # for the worker node's processes only
        self.gcs, self.dashboard = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        # Both sides name the auth mode, so the result does not depend on whether a token
        # file happens to exist (cluster/README.md explains).
        self.env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}",
                    "RAY_AUTH_MODE": "token" if token else "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.temp = Path(f"/tmp/ray-test-{self.gcs}")  # short: socket paths are limited

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def __enter__(self) -> "LocalCluster":
        self.home.mkdir(parents=True, exist_ok=True)
        if self.token:  # cluster/README.md: once per machine
            subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=self.env,
                           check=True, capture_output=True, timeout=60)
        self._node(["--head", "--port", str(self.gcs), "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(self.dashboard),
                    "--ray-client-server-port", str(free_port()),
                    "--num-cpus", str(self.head_cpus)], "head", self.temp)
        self._wait_for(1)
        self._node(["--address", f"127.0.0.1:{self.gcs}", "--num-cpus", str(self.worker_cpus),
                    "--resources", json.dumps(self.worker_resources)], "worker",
                   Path(f"{self.temp}-worker"), self.worker_env)
        self._wait_for(2)
        return self

    def __exit__(self, *exc) -> None:
        for node in reversed(self.processes):
            node.send_signal(signal.SIGTERM)
        for node in reversed(self.processes):
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
        # what a killed `ray start --block` leaves behind (workers of this cluster only)
        subprocess.run(["pkill", "-9", "-f", str(self.temp)], check=False)
        subprocess.run(["pkill", "-9", "-f", f"127.0.0.1:{self.gcs}"], check=False)

    def _node(self, args: list[str], name: str, temp: Path, env: dict | None = None) -> None:
        """A node's processes keep their files apart (two nodes of one machine sharing a
        temp dir would unpack a job's working dir over each other). `env`: for this node's
        processes (its raylet's workers inherit it)."""
        log = open(self.home / f"ray-{name}.log", "w")
        self.processes.append(subprocess.Popen(
            [BIN / "ray", "start", "--block", "--disable-usage-stats", "--temp-dir",
             str(temp), "--dashboard-agent-listen-port", str(free_port()), *args],
            env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT))

    def kill_worker_raylet(self) -> int:
        """Kill the worker node's raylet (SIGKILL, as a lost machine would go): its `ray start
        --block` then stops the node's processes. Returns the raylet's pid."""
        out = subprocess.run(["pgrep", "-f", f"raylet/raylet .*--temp_dir={self.temp}-worker( |$)"],
                             capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        if len(pids) != 1:
            raise RuntimeError(f"expected one raylet of the worker node, found {pids}")
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def _wait_for(self, n: int, timeout: float = 180) -> None:
        """Until the cluster has n live nodes and its job agent takes submissions."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a ray node exited: see {self.home}/ray-*.log")
            out = subprocess.run([BIN / "ray", "job", "list", "--address", self.address],
                                 env=self.env, capture_output=True, text=True, timeout=60)
            if out.returncode == 0 and self.live_nodes() >= n:
                return
            time.sleep(2)
        raise RuntimeError(f"the cluster did not reach {n} node(s) in {timeout:.0f}s")

    def live_nodes(self) -> int:
        return self._ask("sum(n['Alive'] for n in ray.nodes())", check=False) or 0

    def submit(self, entrypoint: list[str], timeout: float = 1800) -> subprocess.CompletedProcess:
        """`ray job submit --working-dir .` from the repository root, waiting for the job."""
        return subprocess.run(
            [BIN / "ray", "job", "submit", "--address", self.address, "--working-dir", ".",
             "--", *entrypoint], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout)

    def actors(self) -> list[dict]:
        """Every actor the cluster has run (class name, node id, pid), from Ray's state API."""
        return self._ask("[{'class': a.class_name, 'node': a.node_id, 'pid': a.pid} for a in "
                         "__import__('ray.util.state').util.state.list_actors("
                         "limit=10000, raise_on_missing_output=False)]")

    def nodes(self) -> dict[str, dict]:
        """node id -> its resources, for the live nodes."""
        return self._ask("{n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}")

    def _ask(self, expression: str, check: bool = True):
        """The JSON value of a Python expression evaluated in a driver connected to this
        cluster (a process of its own: the test process stays out of the cluster). None
        when it fails and `check` is off."""
        code = (f"import json, ray; ray.init(address='auto', logging_level='ERROR'); "
                f"print(json.dumps({expression}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**self.env, "RAY_ADDRESS": f"127.0.0.1:{self.gcs}"},
                             timeout=120, check=check)
        lines = out.stdout.strip().splitlines()
        return json.loads(lines[-1]) if out.returncode == 0 and lines else None
