"""The tokenizer actors rebuild the driver's tokenizer from its snapshot: the same rows as loading it in full, for
every tokenizer class (whose own loading changes what tokenizer.json says), without importing torch; a snapshot
that does not reproduce the original is discarded for a full load."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import sample_texts

from pipeline.actors import TokenizeActor
from pipeline.columns import REJECT, TEXT, TOKENIZED_AT
from pipeline.config import ModelConfig
from pipeline.model_loading import ModelSettings, TokenizerPadding, load_tokenizer, resolve_model_settings
from pipeline.tokenizer_snapshot import TokenizerSnapshot

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / ".models"
# transformers 5 classes that rebuild the backend their own way from one tokenizer.json (each tokenizes the tiny
# models' text differently from the generic class), and the generic class itself
CLASSES = [
    "TokenizersBackend",
    "GemmaTokenizer",
    "Qwen2Tokenizer",
    "GPT2Tokenizer",
    "RobertaTokenizer",
    "BertTokenizer",
    "CLIPTokenizer",
    "MPNetTokenizer",
]
ODD = ["", " ", "\u200b", "😀" * 50, "<bos> <eos> <pad> <unk>", "a" * 5000, "word " * 3000]


def with_class(src: Path, dst: Path, cls: str) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": cls}))
    return dst


def block(texts: list[str]) -> pa.Table:
    return pa.table({"id": [str(i) for i in range(len(texts))], TEXT: texts, REJECT: pa.nulls(len(texts), pa.string())})


def rows(actor: TokenizeActor, texts: list[str]) -> dict:
    """The actor's output rows, without the time each call returned (TOKENIZED_AT: a wall clock, for the summary)."""
    return actor(block(texts)).drop_columns([TOKENIZED_AT]).to_pydict()


@pytest.mark.parametrize("long_inputs", ["truncate", "chunk"])
@pytest.mark.parametrize("cls", CLASSES)
def test_actors_rebuilt_from_the_snapshot_tokenize_as_a_full_load(tiny_models, tmp_path, cls, long_inputs):
    model = ModelConfig(
        name_or_path=str(with_class(tiny_models["gemma3"], tmp_path / cls, cls)),
        max_tokens=24,
        long_inputs=long_inputs,
        chunk_overlap_tokens=4,
    )
    settings = resolve_model_settings(model)
    assert type(settings.tokenizer).__name__ == cls
    snapshot = settings.snapshot
    assert snapshot is not None and snapshot.load() is not None
    texts = sample_texts() + ODD
    full = rows(TokenizeActor(settings.model, "query: "), texts)
    rebuilt = rows(TokenizeActor(settings.model, "query: ", snapshot=snapshot), texts)
    assert rebuilt == full


def test_a_snapshot_that_does_not_reproduce_the_original_is_discarded(tiny_models, tmp_path, caplog):
    """BertTokenizer's backend differs from the generic class's one on the same tokenizer.json: a snapshot carrying
    the wrong one fails its probe, and the actor loads the tokenizer in full."""
    bert_like = ModelConfig(name_or_path=str(with_class(tiny_models["gemma3"], tmp_path / "b", "BertTokenizer")))
    generic = ModelConfig(name_or_path=str(tiny_models["gemma3"]))
    right = TokenizerSnapshot.of(load_tokenizer(bert_like))
    other = TokenizerSnapshot.of(load_tokenizer(generic))
    wrong = TokenizerSnapshot(other.backend, right.init, right.expected)
    with caplog.at_level(logging.INFO, logger="pipeline.tokenizer_snapshot"):
        assert wrong.load() is None
    assert "differs from the original" in caplog.text
    broken = TokenizerSnapshot(right.backend[:1000], right.init, right.expected)  # a truncated cache file
    assert broken.load() is None
    texts = sample_texts()[:40]
    full = rows(TokenizeActor(bert_like, ""), texts)
    assert rows(TokenizeActor(bert_like, "", snapshot=wrong), texts) == full
    assert rows(TokenizeActor(bert_like, "", snapshot=broken), texts) == full


def test_the_tokenizer_actor_rebuilt_from_a_snapshot_does_not_import_torch(tiny_models, tmp_path):
    """transformers' AutoTokenizer imports torch (through AutoConfig): a second of a tokenizer actor's start-up
    for nothing. Rebuilt from the snapshot, the actor imports neither torch nor the model's tokenizer class."""
    model = ModelConfig(name_or_path=str(with_class(tiny_models["gemma3"], tmp_path / "q", "Qwen2Tokenizer")))
    snapshot = resolve_model_settings(model).snapshot
    (tmp_path / "snapshot.json").write_text(json.dumps(snapshot.__dict__))
    (tmp_path / "model.json").write_text(model.model_dump_json())
    code = f"""
import json, sys
from pathlib import Path
import pyarrow as pa
from pipeline.actors import TokenizeActor
from pipeline.columns import REJECT, TEXT
from pipeline.config import ModelConfig
from pipeline.tokenizer_snapshot import TokenizerSnapshot
snapshot = TokenizerSnapshot(**json.loads(Path({str(tmp_path / "snapshot.json")!r}).read_text()))
model = ModelConfig.model_validate_json(Path({str(tmp_path / "model.json")!r}).read_text())
actor = TokenizeActor(model, "", snapshot=snapshot)
out = actor(pa.table({{"id": ["0"], TEXT: ["some text"], REJECT: pa.nulls(1, pa.string())}}))
print(json.dumps({{"torch": "torch" in sys.modules, "class": type(actor.tokenizer.tokenizer).__name__,
                  "qwen2": any("qwen2" in name for name in sys.modules), "rows": out.num_rows}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"torch": False, "class": "TokenizersBackend", "qwen2": False, "rows": 1}


@pytest.mark.parametrize("name", ["multilingual-e5-small", "all-minilm-l6-v2", "smollm2-135m"])
def test_real_tokenizers_rebuilt_from_their_snapshot_tokenize_as_a_full_load(name):
    """XLM-R's Unigram rebuilt by XLMRobertaTokenizer, BERT's lowercasing WordPiece (plus rayembed's lowercase for
    do_lower_case), SmolLM2's byte-level BPE."""
    path = MODELS / name
    if not path.is_dir():
        pytest.skip(f"{path} absent: run ../shared/tools/get-models.sh .models")
    model = ModelConfig(name_or_path=str(path), max_tokens=64)
    settings = resolve_model_settings(model)
    assert settings.snapshot is not None
    texts = sample_texts() + ODD
    full = rows(TokenizeActor(settings.model, "query: "), texts)
    assert rows(TokenizeActor(settings.model, "query: ", snapshot=settings.snapshot), texts) == full


def with_config(src: Path, dst: Path, **keys) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps({**config, **keys}))
    return dst


@pytest.mark.parametrize(
    "keys",
    [
        # Gemma-3's tokenizer_config names its image tokens at the top level (transformers 5: any `*_token` key)
        {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
        # multimodal configs as transformers 5 saves them: a dict of named extra special tokens
        {"extra_special_tokens": {"image_token": "<image>", "video_token": "<video>"}},
        # both, with a list-form extra token too (written out in the texts below)
        {"audio_token": "<audio>", "additional_special_tokens": ["<extra_a>"]},
    ],
    ids=["top_level", "dict", "mixed"],
)
def test_model_specific_named_special_tokens_are_carried_by_the_snapshot(tiny_models, tmp_path, keys):
    """Named special tokens beyond bos/eos/unk/sep/pad/cls/mask (a multimodal model's image tokens, LUKE's entity
    tokens) are special tokens of the original: a snapshot without them failed its probe on every actor, which then
    paid the rebuild and a full load."""
    path = with_config(tiny_models["gemma3"], tmp_path / "m", **keys)
    settings = resolve_model_settings(ModelConfig(name_or_path=str(path), max_tokens=24))
    assert settings.snapshot is not None
    rebuilt = settings.snapshot.load()
    assert rebuilt is not None
    assert sorted(rebuilt.all_special_ids) == sorted(settings.tokenizer.all_special_ids)
    written = [str(t) for t in settings.tokenizer.all_special_tokens]
    texts = sample_texts()[:40] + [f"a {t} b{t}c" for t in written] + [" ".join(written)]
    full = rows(TokenizeActor(settings.model, "query: "), texts)
    assert rows(TokenizeActor(settings.model, "query: ", snapshot=settings.snapshot), texts) == full


def test_a_snapshot_backend_altered_in_the_cache_is_not_used(tiny_models, tmp_path, monkeypatch):
    """The probe sees a few hundred tokens: a cached backend whose vocabulary changed elsewhere (a flipped byte, an
    edit) passed it and tokenized other text to other ids. The backend is stored by its sha256; read back, content
    that no longer has that digest is no snapshot, and the actors load the tokenizer in full."""
    from pipeline import resolution_cache

    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "cache"))
    model = ModelConfig(name_or_path=str(tiny_models["gemma3"]), max_tokens=64)
    first, _ = resolution_cache.resolve_remembered(model)
    expected = first.snapshot.expected
    probed = {i for call in ("special", "special_cut", "plain") for ids, _ in expected[call] for i in ids}
    probed |= set(expected["all_special_ids"])
    texts = sample_texts()[:60]
    used = [i for t in texts for i in first.tokenizer(t, add_special_tokens=False)["input_ids"] if i not in probed]
    a, b = used[0], next(i for i in used if i != used[0])
    (backend_file,) = (tmp_path / "cache" / resolution_cache.FOLDER / resolution_cache.BACKENDS).iterdir()
    backend = json.loads(backend_file.read_text())
    vocab = backend["model"]["vocab"]
    token_a, token_b = (next(t for t, i in vocab.items() if i == x) for x in (a, b))
    vocab[token_a], vocab[token_b] = b, a  # two tokens the probe never produces swap their ids
    backend_file.write_text(json.dumps(backend))
    again, _ = resolution_cache.resolve_remembered(model)
    assert rows(TokenizeActor(again.model, "", snapshot=again.snapshot), texts) == rows(TokenizeActor(model, ""), texts)
    assert again.snapshot is None


class _Words:
    """A pre-tokenizer written in Python, as RoFormer's (jieba word splits) is: the backend cannot be serialized."""

    def pre_tokenize(self, pretok):
        pretok.split(lambda _, s: s.split(" ", "removed"))


def test_a_tokenizer_whose_backend_cannot_be_serialized_is_loaded_by_the_actors(tiny_models):
    """RoFormer's tokenizer (RoFormerTokenizer: a custom Python pre-tokenizer) cannot be written out, nor pickled:
    TokenizerSnapshot.of raised on the driver and the job failed; no snapshot then, and no tokenizer shipped either
    (it cannot be pickled): each actor loads its own."""
    from tokenizers.pre_tokenizers import PreTokenizer

    model = ModelConfig(name_or_path=str(tiny_models["gemma3"]), max_tokens=24)
    tokenizer = load_tokenizer(model)
    tokenizer.backend_tokenizer.pre_tokenizer = PreTokenizer.custom(_Words())
    assert TokenizerSnapshot.of(tokenizer) is None
    settings = ModelSettings(model, {}, tokenizer, TokenizerPadding.of(tokenizer), None)
    assert settings.shipped_tokenizer is None
    assert ModelSettings(model, {}, load_tokenizer(model), settings.padding, None).shipped_tokenizer is not None


def test_roformer_models_resolve_and_tokenize_as_a_full_load(tiny_models, tmp_path):
    pytest.importorskip("rjieba", reason="RoFormerTokenizer needs rjieba")
    model = ModelConfig(
        name_or_path=str(with_class(tiny_models["bert"], tmp_path / "r", "RoFormerTokenizer")), max_tokens=24
    )
    settings = resolve_model_settings(model)
    assert type(settings.tokenizer).__name__ == "RoFormerTokenizer"
    assert settings.snapshot is None and settings.shipped_tokenizer is None
    texts = sample_texts()[:40]
    assert len(rows(TokenizeActor(settings.model, ""), texts)[REJECT]) == len(texts)  # the actor loads its own


def test_a_class_that_encodes_in_python_is_not_snapshotted(tiny_models, tmp_path):
    """CodeLlamaTokenizer splits a text at its fill token (<FILL_ME>) and encodes it for infilling, in Python: the
    generic class does not, the probe (no fill token) passed, and a prompt carrying one was counted differently, so
    chunk mode cut other windows. A class that overrides the encoding in Python (CodeLlama, CPM's jieba, LUKE,
    LayoutLM, SeamlessM4T) is loaded in full by the actors, as before the snapshot."""
    path = with_config(
        tiny_models["gemma3"],
        tmp_path / "c",
        tokenizer_class="CodeLlamaTokenizer",
        fill_token="<FILL_ME>",
        prefix_token="<bos>",
        middle_token="<eos>",
        suffix_token="<pad>",
    )
    model = ModelConfig(name_or_path=str(path), max_tokens=40, long_inputs="chunk", chunk_overlap_tokens=4)
    settings = resolve_model_settings(model)
    assert type(settings.tokenizer).__name__ == "CodeLlamaTokenizer"
    prompt, texts = "Complete <FILL_ME> this: ", [*sample_texts()[:30], "word " * 200]
    full = rows(TokenizeActor(settings.model, prompt), texts)
    assert rows(TokenizeActor(settings.model, prompt, snapshot=settings.snapshot), texts) == full
    assert settings.snapshot is None


def test_a_snapshot_that_cannot_be_written_to_the_temp_folder_leaves_a_full_load(tiny_models, tmp_path, monkeypatch):
    """The rebuild parses the backend from a temporary file (megabytes per actor): a temp folder that is gone, full
    or read-only made the actor fail to start, where loading the tokenizer in full works."""
    import tempfile

    model = ModelConfig(name_or_path=str(tiny_models["gemma3"]), max_tokens=24)
    settings = resolve_model_settings(model)
    texts = sample_texts()[:20]
    full = rows(TokenizeActor(settings.model, ""), texts)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    assert settings.snapshot.load() is None
    assert rows(TokenizeActor(settings.model, "", snapshot=settings.snapshot), texts) == full
