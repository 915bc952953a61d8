"""Folders that give their vectors without one text transformer whose states rayembed pools (a static embedding
model, a Router / Asym, a text-image dual encoder) are refused on the driver saying what they are and what to do,
through the product's driver resolution (with_model_defaults), as a user's run meets them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import EmbedConfig
from pipeline.errors import UserError
from pipeline.model_defaults import with_model_defaults

REPO = Path(__file__).resolve().parents[1]


def resolve(model: Path) -> None:
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": str(model)}}
    )
    with_model_defaults(cfg)


def static_folder(tiny_models, dst: Path, layout: str) -> Path:
    """A StaticEmbedding model as sentence-transformers saves it (no config.json), or as model2vec saves one
    (config.json model_type model2vec, with or without the modules.json it writes for sentence-transformers)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"]).backend_tokenizer
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=16), Normalize()]).save(str(dst))
    if layout != "sentence-transformers":
        (dst / "config.json").write_text(json.dumps({"model_type": "model2vec", "hidden_dim": 16, "normalize": True}))
    if layout == "model2vec without modules.json":
        (dst / "modules.json").unlink()
        shutil.rmtree(dst / "1_Normalize")
    return dst


@pytest.mark.parametrize("layout", ["sentence-transformers", "model2vec", "model2vec without modules.json"])
def test_a_static_embedding_model_is_refused_saying_what_it_is(tiny_models, tmp_path, layout):
    """Was: 'has no config.json: it is not a transformers model directory' (sentence-transformers' save), the
    generic list of modules rayembed does not run (model2vec's), and the tokenizer's 'no pad, eos or unk token'
    after the driver's resolution had passed (model2vec without modules.json)."""
    model = static_folder(tiny_models, tmp_path / "static", layout)
    with pytest.raises(UserError, match=r"is a static embedding model \(.*\).*embed it with model2vec"):
        resolve(model)


def test_a_router_is_refused_naming_its_routes(tiny_models, tmp_path):
    """sentence-transformers' Router (query and document through different modules) saves no config.json at the
    root: it was refused as 'not a transformers model directory'."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    router = Router.for_query_document(
        query_modules=[Transformer(str(tiny_models["bert"])), Pooling(64, "mean")],
        document_modules=[Transformer(str(tiny_models["bert"])), Pooling(64, "cls")],
    )
    SentenceTransformer(modules=[router, Normalize()]).save(str(tmp_path / "router"))
    with pytest.raises(UserError, match=r"Router at the root, modules.json: routes query, document\);.*one job per"):
        resolve(tmp_path / "router")


def test_an_older_asym_model_is_refused_as_a_router(tiny_models, tmp_path):
    """The older Asym module, with the transformer kept at the root (config.json there): was the generic list."""
    model = shutil.copytree(tiny_models["bert"], tmp_path / "asym")
    asym = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Asym"}
    (model / "modules.json").write_text(json.dumps([asym]))
    (model / "asym_config.json").write_text(json.dumps({"types": {}, "structure": {"query": [], "doc": []}}))
    with pytest.raises(UserError, match=r"Asym at the root, modules.json: routes query, doc\)"):
        resolve(model)


def dual_encoder(tiny_models, dst: Path, model_type: str) -> Path:
    from transformers import AutoModel, AutoTokenizer, CLIPConfig, SiglipConfig, set_seed

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2, "max_position_embeddings": 64}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision |= {"image_size": 28, "patch_size": 14}
    make = CLIPConfig if model_type == "clip" else SiglipConfig
    set_seed(0)
    AutoModel.from_config(make(text_config=text, vision_config=vision)).save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    return dst


@pytest.mark.parametrize("model_type, st_module", [("clip", False), ("siglip", False), ("clip", True)])
def test_a_text_image_dual_encoder_is_refused_on_the_driver(tiny_models, tmp_path, model_type, st_module):
    """A CLIP or SigLIP folder (bare, or as sentence-transformers' clip-ViT-B-32 keeps it): the bare one passed the
    driver and failed in every model actor ("'NoneType' object has no attribute 'shape'": its forward needs pixel
    values); the other was 'has no config.json: it is not a transformers model directory'."""
    model = dual_encoder(tiny_models, tmp_path / model_type, model_type)
    where = f"config.json model_type '{model_type}'"
    if st_module:  # clip-ViT-B-32's layout: the CLIP model in 0_CLIPModel/, no config.json at the root
        model = shutil.copytree(model, tmp_path / "st" / "0_CLIPModel").parent
        clip = {"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}
        (model / "modules.json").write_text(json.dumps([clip]))
        where = "sentence-transformers CLIPModel in 0_CLIPModel/, modules.json"
    with pytest.raises(UserError, match=re.escape(f"dual encoder ({where})") + ".*get_text_features"):
        resolve(model)


def test_the_driver_checks_a_models_kind_without_importing_torch_or_transformers(tiny_models):
    """with_model_defaults runs before every job, on the path a rerun of a model keeps free of torch and transformers
    (pipeline.resolution_cache): the kind check, and the pooling default of a model without a Pooling module, imported
    transformers' auto-model tables, and with them torch (about 1.5 s on the driver before Ray starts). The tables are
    read from transformers' source (pipeline.auto_tables), the same sets its module holds."""
    code = (
        "import sys, json; from pathlib import Path; from tests.test_model_kinds import resolve; "
        f"resolve(Path({str(tiny_models['bert'])!r})); "
        "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stderr
    from transformers.models.auto import modeling_auto

    from pipeline.auto_tables import model_types
    from pipeline.model_kinds import ZERO_SHOT_TABLES

    for tables in (ZERO_SHOT_TABLES, ("MODEL_FOR_MASKED_LM_MAPPING_NAMES",)):
        imported = {key for table in tables for key in getattr(modeling_auto, table)}
        assert model_types(*tables) == imported and len(imported) >= 5, tables
