"""pipeline.driver_reservation: a Jobs API driver's reservation taken off its node (the refusal on a real cluster:
test_multinode::test_gpu_actors_that_only_the_gpu_the_driver_holds_could_take_are_refused)."""

from __future__ import annotations

import json

from pipeline.driver_reservation import Reservation, driver_reservation, submission_id, without_reservation


def test_the_drivers_node_is_counted_without_what_it_holds():
    held = Reservation("n1", {"GPU": 1.0, "CPU": 0.5})
    nodes = [("n0", {"CPU": 4.0, "GPU": 1.0}), ("n1", {"CPU": 2.0, "GPU": 1.0, "memory": 8e9})]
    assert without_reservation(nodes, held) == [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 1.5, "GPU": 0.0, "memory": 8e9}]
    assert without_reservation(nodes, None) == [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0, "memory": 8e9}]
    assert held.words() == "0.5 CPU, 1 GPU"


def test_the_submission_id_comes_from_the_job_config_ray_gives_the_driver(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert submission_id() is None and driver_reservation() is None  # not a Jobs API driver: nothing held
    config = {"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_abc", "job_name": "raysubmit_abc"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(config))
    assert submission_id() == "raysubmit_abc"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "not json")
    assert submission_id() is None
