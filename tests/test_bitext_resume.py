"""What a resumed mining run keeps (pipeline.bitext.resume): the fingerprint's fields and each stage's paths."""

from __future__ import annotations

from pipeline.bitext import resume
from pipeline.config import parse_config
from pipeline.fingerprint import differences
from pipeline.mine_config import MineConfig


def config(tmp_path, **mining) -> MineConfig:
    for name, text in (("fra.txt", "a\nb\n"), ("eng.txt", "c\nd\n")):
        if not (tmp_path / name).exists():
            (tmp_path / name).write_text(text)
    raw = {
        "source": {"uri": str(tmp_path / "fra.txt"), "format": "text", "lang": "fra"},
        "target": {"uri": str(tmp_path / "eng.txt"), "format": "text", "lang": "eng"},
        "output": {"uri": str(tmp_path / "out")},
        "mining": mining,
    }
    return parse_config(MineConfig, raw)


def test_the_fingerprint_names_what_changes_the_pairs_and_ignores_resources(tmp_path):
    base = resume.mine_fingerprint(config(tmp_path))
    resources = config(tmp_path, cpus_per_shard=2, max_in_flight=9, backend="local")
    assert differences(base, resume.mine_fingerprint(resources)) == []
    overwrite = config(tmp_path).model_copy(
        update={"output": config(tmp_path).output.model_copy(update={"overwrite": True})}
    )
    assert differences(base, resume.mine_fingerprint(overwrite)) == []
    assert differences(base, resume.mine_fingerprint(config(tmp_path, threshold=1.1))) == [
        "mining.threshold: null -> 1.1"
    ]
    (tmp_path / "eng.txt").write_text("c\nd\ne\n")  # the input changed: its listing (size) differs
    assert [d.split(":")[0] for d in differences(base, resume.mine_fingerprint(config(tmp_path)))] == ["target.listing"]


def test_layout_settings_may_change_between_attempts_but_an_ivf_shard_count_may_not(tmp_path):
    """A run that crashed for memory resumes with smaller pieces: query blocks, join buckets, output files, and the
    shard count of an exact search. An IVF index is trained per shard, so its shard count changes the pairs."""
    base = resume.mine_fingerprint(config(tmp_path))
    smaller = config(tmp_path, block_size=512, join_bucket_rows=1000, num_shards=3, max_rows_per_shard=10)
    smaller.output.rows_per_file = 7
    assert differences(base, resume.mine_fingerprint(smaller)) == []
    ivf = resume.mine_fingerprint(config(tmp_path, index="ivf"))
    assert differences(ivf, resume.mine_fingerprint(config(tmp_path, index="ivf", block_size=512))) == []
    assert differences(ivf, resume.mine_fingerprint(config(tmp_path, index="ivf", num_shards=2))) == [
        "mining.num_shards: 1 -> 2"
    ]


def test_kept_paths_follow_the_recorded_stages():
    assert resume.kept_paths({}, multi_pair=False) == []
    texts = resume.kept_paths({"texts": {}}, multi_pair=True)
    assert texts == ["texts/", "embeddings/", "work/raw/", "work/ids/"]
    stages = {"texts": {}, "knn": {}, resume.pair_stage("fra", "eng"): {}}
    assert resume.kept_paths(stages, multi_pair=True)[-4:] == [
        "work/emb/",
        "work/vectors/",
        "work/knn/",
        "pairs/src_lang=fra/tgt_lang=eng/",
    ]
    assert resume.kept_paths(stages, multi_pair=False)[-1] == "pairs/"  # the one-pair form has no pair folders
