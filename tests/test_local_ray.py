"""Ray's settings for a head started in the job's own process (pipeline.local_ray)."""

from __future__ import annotations

import os
import time

import psutil

from pipeline.local_ray import KEPT_WORKERS_BEYOND_CPUS, head_environment, local_head_settings


def test_settings_are_set_around_the_start_only_and_a_users_value_wins(monkeypatch):
    monkeypatch.delenv("RAY_num_workers_soft_limit", raising=False)
    with local_head_settings(cpus=2):
        assert os.environ["RAY_num_workers_soft_limit"] == str(2 + KEPT_WORKERS_BEYOND_CPUS)
    assert "RAY_num_workers_soft_limit" not in os.environ
    monkeypatch.setenv("RAY_num_workers_soft_limit", "3")
    assert head_environment(cpus=2) == {}
    with local_head_settings(cpus=2):
        assert os.environ["RAY_num_workers_soft_limit"] == "3"
    assert os.environ["RAY_num_workers_soft_limit"] == "3"


def test_a_task_worker_outlives_the_actors_of_a_job(ray_session):
    """A head with 4 CPUs, its CPUs taken by actors and more workers than CPUs: with Ray's default limit the idle
    task worker was killed a second after its task, so the next read or write task started a new Python process."""
    ray = ray_session

    @ray.remote(num_cpus=0.1)
    def worker_pid() -> int:
        return os.getpid()

    @ray.remote(num_cpus=0)
    class Holder:
        def ready(self) -> bool:
            return True

    task_worker = ray.get(worker_pid.remote())
    # like a job's tokenizer and model actors, which reserve CPUs and have a runtime_env (a fresh worker each),
    # and Ray Data's own three, which reserve none
    env = {"env_vars": {"KEPT": "1"}}
    actors = [Holder.options(num_cpus=1.9, runtime_env=env).remote() for _ in range(2)]
    actors += [Holder.remote() for _ in range(3)]
    try:
        assert all(ray.get([a.ready.remote() for a in actors], timeout=120))
        time.sleep(3.0)  # idle for over a second, with more workers than CPUs: Ray's default killed it by now
        assert psutil.pid_exists(task_worker) and psutil.Process(task_worker).status() != psutil.STATUS_ZOMBIE
    finally:
        for actor in actors:
            ray.kill(actor)
