"""compress --workers / --ray: real processes, a real local Ray, real kills (no mocks)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from compressbo.app.cli import main
from tests.app.runs import FAST
from tests.app.runs import read_history as _history

DETERMINISTIC = ("iteration", "phase", "x", "y", "yvar", "ratio", "error", "m", "ranks", "acquisition_value")


@pytest.fixture
def env(env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the shared FC3 env, one thread per worker process
    return env


def test_pool_of_two_spends_the_exact_budget_on_both_workers(env):
    out = env / "run"
    assert main(["compress", "--init", "4", "--iterations", "4", *FAST, "--out", str(out), "--workers", "2"]) == 0
    records = _history(out)
    assert sorted(r["iteration"] for r in records) == list(range(8))  # one subsample index each
    assert {r["worker"] for r in records} == {0, 1}
    assert len({tuple(r["x"]) for r in records}) == 8  # never a duplicate of a pending point
    assert all(r["started"] <= r["finished"] and r["device"] == "cpu" for r in records)
    assert (out / "best.json").exists()


def test_one_worker_reproduces_the_sequential_history(env):
    args = ["compress", "--init", "4", "--iterations", "3", *FAST]
    assert main([*args, "--out", str(env / "seq")]) == 0
    assert main([*args, "--out", str(env / "one"), "--workers", "1"]) == 0
    sequential, pooled = _history(env / "seq"), _history(env / "one")
    assert [{k: r[k] for k in DETERMINISTIC} for r in sequential] == [{k: r[k] for k in DETERMINISTIC} for r in pooled]


def _start(out, *extra):
    argv = [sys.executable, "-m", "compressbo.app.cli", "compress", "--init", "4", "--iterations", "6", *FAST,
            "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env=dict(os.environ), start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_for_lines(path, n, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (not path.exists() or len(path.read_text().splitlines()) < n):
        time.sleep(0.05)


def _children(pid):
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def test_a_killed_pool_worker_costs_only_its_evaluation(env):
    out = env / "run"
    process = _start(out, "--workers", "2")
    _wait_for_lines(out / "history.jsonl", 2)
    workers = _children(process.pid)
    assert workers, "the pool's processes are the driver's children"
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    records = _history(out)
    assert sorted(r["iteration"] for r in records) == list(range(10))


def test_driver_killed_with_points_in_flight_resumes_them_with_their_indices(env):
    out = env / "run"
    process = _start(out, "--workers", "2")
    _wait_for_lines(out / "history.jsonl", 5)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    prefix = (out / "history.jsonl").read_text()
    finished = {r["iteration"] for r in _history(out)}
    state = json.loads((out / "optimizer_state.json").read_text())
    in_flight = dict(zip(state["pending_indices"], map(tuple, state["optimizer"]["pending"])))
    assert len(finished) < 10

    assert main(["compress", "--resume", str(out), "--quiet", "--workers", "2"]) == 0
    records = _history(out)
    assert (out / "history.jsonl").read_text().startswith(prefix)  # every finished record unchanged
    assert sorted(r["iteration"] for r in records) == list(range(10))  # exact budget, none repeated
    by_index = {r["iteration"]: tuple(r["x"]) for r in records}
    assert all(by_index[i] == x for i, x in in_flight.items() if i not in finished)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_local_ray_spends_the_exact_budget_on_both_actors(env, local_ray):
    out = env / "run"
    assert main(["compress", "--init", "4", "--iterations", "4", *FAST, "--out", str(out), "--ray", "--workers", "2"]) == 0
    records = _history(out)
    assert sorted(r["iteration"] for r in records) == list(range(8))
    assert {r["worker"] for r in records} == {0, 1}


def test_a_killed_ray_actor_costs_only_its_evaluation(env, local_ray, caplog):
    """ray.kill on a busy actor mid-evaluation: its point is evaluated again, the budget is exact."""
    from compressbo.app.executors import RayExecutor
    from compressbo.bo.asynchronous import run_async
    from compressbo.bo import Optimizer
    from compressbo.bo.loop import Loop

    optimizer = Optimizer([(0.0, 1.0)] * 2, acquisition="cei", seed=0, n_init=4, num_restarts=2, raw_samples=32)
    loop = Loop(optimizer, _slow_quadratic, budget=6)
    executor = RayExecutor(_slow_factory, 2)
    killed: list[int] = []

    def kill_a_busy_actor(record):
        if not killed:  # the other actor is busy now (both started together, each takes 1 s)
            worker = next(iter(executor._running.values()))[0]
            killed.append(worker)
            local_ray.kill(executor.actors[worker])

    with caplog.at_level("WARNING"):
        records = run_async(loop, executor, on_record=kill_a_busy_actor)
    assert sorted(r["iteration"] for r in records) == list(range(6))  # the lost point once, none repeated
    lost = re.findall(r"evaluation (\d+) on worker (\d+) .* died .*; evaluating it again", caplog.text)
    assert len(lost) == 1 and int(lost[0][1]) == killed[0]  # said once; its index is among the records once


def _slow_quadratic(x, index):
    from compressbo.bo.loop import Evaluation

    time.sleep(1.0)
    return Evaluation(float((x - 0.3).pow(2).sum()), 1e-4, info={"index": index})


def _slow_factory(worker, device):
    return _slow_quadratic


def test_compare_on_ray_tasks_matches_the_sequential_comparison(tmp_path, local_ray):
    args = ["compare", "--problem", "levy4", "--acq", "ei", "cei", "--seeds", "2", "--iterations", "2",
            "--init", "4", "--num-restarts", "2", "--raw-samples", "32", "--quiet"]  # fmt: skip
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "seq")]) == 0
    assert main([*args, "--ray", "--out", str(tmp_path / "ray")]) == 0
    runs = [json.loads((tmp_path / d / "runs.json").read_text())["runs"] for d in ("seq", "ray")]
    assert len(runs[1]) == 4
    def strip(run):
        points = [*run["initial_design"], *run["steps"]]
        return [(point["x"], point["y"]) for point in points], run["best_evaluated_scores"]

    assert [strip(r) for r in runs[0]] == [strip(r) for r in runs[1]]  # same runs, whichever process ran them


def test_workers_are_spread_round_robin_over_the_listed_devices():
    from compressbo.app.executors import worker_devices
    from compressbo.exceptions import SettingError

    assert worker_devices("cpu", 3) == ["cpu"] * 3
    assert worker_devices("cpu,cpu", 3) == ["cpu"] * 3
    if torch.cuda.device_count() >= 2:
        assert worker_devices("cuda:1,cuda:0", 3) == ["cuda:1", "cuda:0", "cuda:1"]
    else:
        with pytest.raises(SettingError, match="no CUDA GPU|does not exist"):
            worker_devices("cpu,cuda:1", 2)
