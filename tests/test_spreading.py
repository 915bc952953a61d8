"""Every embedding actor of a pool gets rows of a small corpus, in one file or packed from many (pipeline.spreading)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
from robustness_helpers import embedded_here

from pipeline.config import EmbedConfig
from pipeline.embed_job import run_embed
from pipeline.spreading import SHARED_BYTES, SharedCorpus, is_small
from pipeline.stages import pool_capacity

# Two actors and a small corpus: each run's time is the pool's start-up, and one unit is one read block whatever
# its size (the three actors and 2,400 rows in 30 files this test had cost ~100 s in CI for the same check)
ACTORS = 2
ROWS = 600
FILES = 4  # of ~10 KB each, for the packed layout


def test_a_corpus_is_shared_out_whole_when_it_is_at_most_shared_bytes_per_actor():
    assert is_small(3 * SHARED_BYTES, 3) and not is_small(3 * SHARED_BYTES + 1, 3)
    assert not is_small(1, 1)  # one actor: nothing to spread
    assert not is_small(None, 3)


def test_a_shared_corpus_is_one_block_per_actor_or_the_error_that_stopped_its_read(ray_session):
    """The thread's materialization reaches the shares through the board: every row, in one block per actor; an
    error raised while the corpus is read or tokenized is the one the shares raise, not a wait for ever."""
    shares = SharedCorpus(ray_session.data.range(10, override_num_blocks=3), actors=2).shares().materialize()
    blocks = [ray_session.get(ref) for bundle in shares.iter_internal_ref_bundles() for ref in bundle.block_refs]
    assert sorted(b.num_rows for b in blocks) == [5, 5]
    assert sorted(r for b in blocks for r in b.column("id").to_pylist()) == list(range(10))

    def unreadable(batch):
        raise ValueError("part-07.jsonl: line 3 is not JSON")

    with pytest.raises(Exception, match="part-07.jsonl: line 3 is not JSON"):
        SharedCorpus(ray_session.data.range(4).map_batches(unreadable), actors=2).shares().materialize()


def corpus_rows() -> list[dict]:
    return [{"id": f"r{r:05d}", "text": f"word{r} token{r % 97} piece{r % 13} the same corpus"} for r in range(ROWS)]


def write_corpus(folder, files: int) -> None:
    folder.mkdir()
    rows = corpus_rows()
    per = -(-ROWS // files)
    for f in range(files):
        (folder / f"part-{f:02d}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in rows[f * per : (f + 1) * per])
        )


def config(model, corpus, out) -> EmbedConfig:
    return EmbedConfig.model_validate(
        {
            "input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"},
            "output": {"uri": str(out)},
            "model": {"name_or_path": str(model), "max_tokens": 32},
            "compute": {"num_actors": ACTORS, "cpus_per_actor": 0.5, "cpus_per_tokenizer": 0.5},
        }
    )


def vectors(out) -> dict[str, np.ndarray]:
    table = pq.read_table(sorted(out.glob("part-*.parquet")))
    return dict(zip(table.column("id").to_pylist(), np.asarray(table.column("embedding").to_pylist())))


@pytest.mark.slow
@pytest.mark.timeout(300)  # the old code waited 30 minutes for an actor that never starts
def test_every_actor_of_the_pool_embeds_rows_of_a_small_corpus(ray_session, tiny_models, tmp_path, caplog):
    """600 rows in 4 files packed into one unit: one read block, which went whole to one of the embedding actors
    (the summary's embed_actors was 1), as one file of 600 rows did. Cut into a block per actor, each embeds its
    share; the vectors are those of the same rows embedded unspread, in this process by the same stage UDFs. (One
    file is one unit and one read block too, the same path from there on (test_units::
    test_small_files_are_packed_into_units_read_as_few_blocks): its embed run here cost a pool start-up for it.)

    The pool starts while the corpus is read and tokenized: its first actor began to start (the actor's own clock,
    the summary's embed_actors_started_s) before the last row was tokenized (the tokenizer's, tokenized_s). Every
    actor started after it when the corpus was read, tokenized and cut before the pool started. (The other actors
    are asked for at the same moment, but on a loaded machine Ray may start their processes seconds later.)

    The job asks for one actor more than fit (compute.num_actors 3 of 1.5 CPUs each on the session's 4-CPU Ray,
    which cannot add nodes): Ray Data waits for a pool's minimum before a small corpus's blocks go out, so the job
    waited with no word for the third actor (30 minutes: pipeline.spreading's wait for actors; this test's timeout
    on the old code). The pool starts with the two that fit, and one warning names the key, what fits and what
    to lower."""
    model = tiny_models["bert"]
    write_corpus(tmp_path / "corpus", FILES)
    cfg = config(model, tmp_path / "corpus", tmp_path / "packed")
    cfg = cfg.model_copy(update={"compute": cfg.compute.model_copy(update={"num_actors": 3, "cpus_per_actor": 1.5})})
    with caplog.at_level(logging.WARNING, logger="pipeline.stages"):
        summary = run_embed(cfg)
    [warning] = [r.getMessage() for r in caplog.records if "asks for 3 embedding actors" in r.getMessage()]
    assert warning.startswith("compute.num_actors asks for 3 embedding actors of 1.5 CPU each, but the nodes of")
    assert "hold 2 of them at once (4 CPUs and 0 GPUs; beside" in warning and "Lower compute.num_actors to 2" in warning
    assert (summary["units"], summary["rows_embedded"]) == (1, ROWS)
    assert summary["embed_actors"] == ACTORS, summary["vectors_per_actor"]
    assert summary["vectors_per_actor"] == [ROWS // ACTORS] * ACTORS
    started, tokenized = summary["embed_actors_started_s"], summary["tokenized_s"]
    assert len(started) == ACTORS and min(started) < tokenized, (started, tokenized)
    want = embedded_here(config(model, tmp_path / "corpus", tmp_path / "unused"), corpus_rows())
    assert sorted(want) == [f"r{r:05d}" for r in range(ROWS)]
    got = vectors(tmp_path / "packed")
    assert sorted(got) == sorted(want)
    assert all(np.allclose(got[k], want[k], atol=1e-6) for k in want)


def test_pool_capacity_counts_the_actors_each_node_holds_at_once():
    nodes = [{"CPU": 4.0, "GPU": 2.0, "memory": 8e9}, {"CPU": 2.0}, {"CPU": 3.0, "GPU": 1.0, "A100": 1.0}]
    assert pool_capacity({"CPU": 1.5}, nodes) == 2 + 1 + 2
    assert pool_capacity({"CPU": 1.0, "GPU": 1.0}, nodes) == 2 + 0 + 1
    assert pool_capacity({"CPU": 1.0, "memory": 3e9}, nodes) == 2  # memory: on the node that reports it
    assert pool_capacity({"A100": 1.0, "CPU": 1}, nodes) == 1
    assert pool_capacity({"GPU": 0.5}, nodes) == 6


def test_pool_capacity_leaves_room_for_what_runs_beside_the_actors():
    nodes = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
    beside = [{"CPU": 0.5}, {"CPU": 0.25}]  # a tokenizer actor, a read/write task
    assert pool_capacity({"CPU": 1.0}, [{"CPU": 2.0}], beside) == 1  # 2 on paper; 1 beside them
    assert pool_capacity({"CPU": 1.0}, nodes, beside) == 1 + 4  # both on one node: one actor fewer, not two
    assert pool_capacity({"CPU": 1.0, "GPU": 1.0}, nodes, beside) == 1  # the CPU node takes them: no GPU actor lost
    assert pool_capacity({"CPU": 1.0}, [{"CPU": 0.2}], beside) == 0  # fits nowhere: left out, not negative
    assert pool_capacity({"CPU": 0.75}, [{"CPU": 2.25}], beside) == 2


def test_a_fixed_ray_pool_leaves_room_for_the_tokenizers(ray_session, tiny_models, tmp_path, caplog):
    # 4 actors of 1 CPU on the session's 4 CPUs: the tokenizer actor (0.5 CPU) and a read/write task (0.25) left
    # the 4th never starting, and Ray Data waited for it with no word (30 minutes); now the pool is 3, said so
    from pipeline.stages import model_pool

    cfg = config(tiny_models["bert"], tmp_path / "corpus", tmp_path / "out")
    cfg = cfg.model_copy(update={"compute": cfg.compute.model_copy(update={"num_actors": 4, "cpus_per_actor": 1.0})})
    with caplog.at_level(logging.WARNING, logger="pipeline.stages"):
        assert model_pool(cfg, warn=True) == (3, 3)
    [warning] = [r.getMessage() for r in caplog.records if "asks for 4 embedding actors" in r.getMessage()]
    assert "hold 3 of them at once" in warning and "beside the job's 1 tokenizer actor(s) of 0.5 CPU" in warning
    # a shape given to plan for (another cluster) is planned as given, whatever Ray this process is connected to: with
    # the session Ray up, test_stages' plan of 3 actors on ONE_CPU_NODE came out (1, 1) in CI, by test order
    from pipeline.actors import EmbedActor
    from pipeline.stages import ClusterShape, embed_stage

    given = ClusterShape(gpus_per_node=(), cpu_nodes=1)
    assert embed_stage(cfg, EmbedActor, shape=given).pool == (4, 4) and model_pool(cfg, given) == (4, 4)
