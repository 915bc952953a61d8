"""pipeline.actor_start: a model the actors cannot load for a deterministic reason fails the job after one load; an
actor process that dies while loading (the OOM killer) is still restarted. Real Ray, a tiny random-weight BERT."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.actor_start import ActorStartError, is_deterministic
from pipeline.actors import EmbedActor
from pipeline.embed_job import run_embed
from pipeline.errors import UserError, user_error_in
from pipeline.model_loading import ModelLoadError

sys.path.insert(0, str(Path(__file__).parent))
from faulty_actors import use
from robustness_helpers import make_config
from test_encoder import rewrite_weights


@pytest.mark.parametrize(
    ("err", "deterministic"),
    [
        (ModelLoadError("cannot load model m: 24 of the 39 weights of BertModel are not in its checkpoint"), True),
        (RuntimeError("Error(s) in loading state_dict: size mismatch ... ignore_mismatched_sizes"), True),
        (ValueError("Unrecognized model in m. Should have a `model_type` key in its config.json"), True),
        (ImportError("FlashAttention2 has been toggled on, but it cannot be used"), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable"), False),
        (OSError("We couldn't connect to 'https://huggingface.co' to load the files"), False),
        (ConnectionError("Connection reset by peer"), False),
    ],
)
def test_which_start_errors_a_restart_cannot_fix(err, deterministic):
    assert is_deterministic(err) is deterministic


def test_an_actor_that_cannot_load_raises_on_its_first_call_with_the_loaders_message(tiny_models, tmp_path):
    broken = rewrite_weights(tiny_models["bert"], tmp_path / "broken", lacking_layer_1)
    cfg = make_config(broken, tmp_path / "c.jsonl", tmp_path / "out", "jsonl")
    actor = EmbedActor(cfg.model, cfg.batching, 1, "float32")  # no exception here: Ray Data would restart it
    with pytest.raises(ActorStartError, match=r"^the EmbedActor actors could not start: ModelLoadError: cannot load"):
        actor(None)
    assert isinstance(actor.start_failure, UserError) and "\n" not in str(actor.start_failure)


def lacking_layer_1(state: dict) -> dict:
    return {k: v for k, v in state.items() if ".layer.1." not in k}


def counting(state_dir: Path, kill_first: bool = False) -> type:
    """An EmbedActor that records each construction (a model load) in `state_dir`; with `kill_first`, the first
    one SIGKILLs its own process while loading, as the OOM killer does."""

    class Counting(EmbedActor):
        def __init__(self, *args, **kwargs):
            n = len(list(state_dir.iterdir()))
            (state_dir / f"load-{n}-{os.getpid()}").write_text("")
            if kill_first and n == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            super().__init__(*args, **kwargs)

    Counting.__name__ = Counting.__qualname__ = "CountingEmbedActor"
    return Counting


def corpus(tmp_path: Path, rows: int = 40) -> Path:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i} of a small corpus"}) + "\n" for i in range(rows)))
    return path


@pytest.mark.slow
def test_a_model_the_actors_cannot_load_fails_the_job_after_one_load(tiny_models, tmp_path, ray_session, monkeypatch):
    """A checkpoint missing a layer's weights passes the driver's checks (only transformers' loading sees the names)
    and is refused in the model actor. Before, Ray Data started the actor compute.max_restarts (3) more times: 4
    model loads before the same error. Now one, and the job's error is the loader's own message."""
    broken = rewrite_weights(tiny_models["bert"], tmp_path / "broken", lacking_layer_1)
    loads = tmp_path / "loads"
    loads.mkdir()
    use(monkeypatch, counting(loads))
    # as the job entrypoints have it (pipeline.errors.udf_errors_as_themselves): the actor's error crosses as itself
    monkeypatch.setattr(ray_session.data.DataContext.get_current(), "raise_original_map_exception", True)
    cfg = make_config(broken, corpus(tmp_path), tmp_path / "out", "jsonl", compute={"max_restarts": 3})
    start = time.monotonic()
    with pytest.raises(Exception) as failed:  # a RayTaskError of the actor's error; its cause is checked below
        run_embed(cfg)
    seconds = time.monotonic() - start
    assert len(list(loads.iterdir())) == 1, (sorted(p.name for p in loads.iterdir()), seconds)  # before: 4
    cause = user_error_in(failed.value)
    assert isinstance(cause, ActorStartError), failed.value
    assert str(cause).startswith("the CountingEmbedActor actors could not start: ModelLoadError: cannot load model")
    assert "encoder.layer.1." in str(cause)


@pytest.mark.slow
def test_an_actor_killed_while_loading_is_still_restarted(tiny_models, tmp_path, ray_session, monkeypatch):
    """The first model actor is SIGKILLed in its constructor (an OOM kill): Ray Data starts another, which loads and
    embeds every row."""
    loads = tmp_path / "loads"
    loads.mkdir()
    use(monkeypatch, counting(loads, kill_first=True))
    cfg = make_config(tiny_models["bert"], corpus(tmp_path), tmp_path / "out", "jsonl", compute={"max_restarts": 3})
    summary = run_embed(cfg)
    assert summary["rows_embedded"] == 40
    assert len(list(loads.iterdir())) == 2
