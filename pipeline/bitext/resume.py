"""How the mining job resumes: its fingerprint, its stages, and what a rerun keeps of each.

    stage     recorded when                        keeps (under output.uri)
    texts     every side is read and numbered      texts/, work/raw/, work/ids/, and embeddings/ (next)
    (embed)   its own run per side (run_embed)     embeddings/<side>/: resumed, or reused once finished
    knn       the k-NN of every pair is written    work/emb/, work/vectors/, work/knn/
    pairs/src_lang=S/tgt_lang=T                    that pair's folder (pairs/ in the one-pair form); once every
              one pair is selected and written     pair is, work/ is removed and reports and summary follow

A stage is recorded (pipeline.commit.mark_unit, `_run/units/<stage>.json`) after all its files are written, with
what the next stages need from it (file lists, counts), so a rerun of the same configuration starts after the last
recorded stage, after deleting every other file (pipeline.commit.drop_except: partial files of the unrecorded
stages, reports, summary). The texts must be kept for the embeddings to be reused: the embed step's fingerprint holds the
listing of texts/<side> (sizes and times), which a rewrite would change. Pure storage and JSON: no Ray.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pipeline.bitext.listings import Listings
from pipeline.bitext.store import StoreRef
from pipeline.fingerprint import listing_digest
from pipeline.mine_config import MineConfig
from pipeline.rules import applied, rule_fields
from pipeline.storage import ListedFile, Location

TEXTS, KNN = "texts", "knn"
KEEP = {TEXTS: ["texts/", "embeddings/", "work/raw/", "work/ids/"], KNN: ["work/emb/", "work/vectors/", "work/knn/"]}
# settings that change where and how fast the search runs, not its result
RESOURCE_KEYS = ("cpus_per_shard", "gpus_per_shard", "max_in_flight", "backend")
# settings that change how the work is cut up (query blocks, join buckets, output files: memory per actor or task),
# not which pairs come out, so a run that crashed for memory resumes with smaller pieces. A stage runs whole in one
# attempt, so each stage's pieces are consistent. The shard count joins them for an exact search only: an IVF index
# is trained per shard, so there it changes the neighbours.
LAYOUT_KEYS = ("block_size", "join_bucket_rows")
EXACT_LAYOUT_KEYS = ("num_shards", "max_rows_per_shard")
OUTPUT_LAYOUT_KEYS = ("rows_per_file",)
# side keys added after runs were recorded: left out of the fingerprint at their default, so an unfinished run of
# an earlier version resumes (a set value is recorded and compared)
ADDED_SIDE_KEYS = {"embedding_column": "embedding", "embeddings_id_column": "id"}
MODEL_RUNTIME_KEYS = ("attn_implementation", "compile", "trust_remote_code", "allow_pickle_weights")


def mine_fingerprint(
    cfg: MineConfig, listings: Listings | None = None, rules: dict[str, str] | None = None
) -> dict[str, Any]:
    """The fields that decide whether an unfinished mining run may be resumed, by name.

    Each side's settings and input listing (count and sha256 of every path, size and change token, as for the embed job;
    the same for an `embeddings_uri`), the model settings, the stored dtype, and every mining setting but the
    resources (RESOURCE_KEYS) and the layout (LAYOUT_KEYS, OUTPUT_LAYOUT_KEYS; EXACT_LAYOUT_KEYS for index: exact). The model's weights are not hashed here: the embed step's own fingerprint
    holds their identity and refuses a resume when they changed.

    `listings`: the run's listings, which the reads and the join then reuse (one LIST per input, not two).
    `rules`: the rules recorded (`applied_mine_rules`), by default this version's.
    """
    fields: dict[str, Any] = {}
    for name in ("source", "target"):
        side = getattr(cfg, name).model_dump()
        for key, default in ADDED_SIDE_KEYS.items():  # at its default, as a run recorded before the key existed
            if side.get(key) == default:
                del side[key]
        fields |= {f"{name}.{k}": v for k, v in sorted(side.items())}
    for key, (_root, listed) in input_listings(cfg, listings or Listings(cfg.storage)).items():
        fields[key] = listing_digest(listed)
    model = cfg.model.model_dump(exclude=set(MODEL_RUNTIME_KEYS))
    fields |= {f"model.{k}": v for k, v in sorted(model.items())}
    output = cfg.output.model_dump(exclude={"uri", "overwrite", *OUTPUT_LAYOUT_KEYS})
    fields |= {f"output.{k}": v for k, v in sorted(output.items())}
    layout = {*LAYOUT_KEYS, *(EXACT_LAYOUT_KEYS if cfg.mining.index == "exact" else ())}
    mining = cfg.mining.model_dump(exclude={*RESOURCE_KEYS, *layout})
    rules = mine_rules() if rules is None else rules
    return fields | {f"mining.{k}": v for k, v in sorted(mining.items())} | rule_fields(rules)


def unused_mine_rules(cfg: MineConfig) -> set[str]:
    """The mining rules that decide nothing of this configuration's results: languages without a lang_column,
    center and dedup when off."""
    unused = set() if cfg.source.lang_column or cfg.target.lang_column else {"languages"}
    unused |= set() if cfg.mining.center else {"center"}
    return unused | (set() if cfg.mining.dedup else {"dedup"})


def applied_mine_rules(cfg: MineConfig, recorded: dict[str, Any] | None) -> dict[str, str]:
    """This version's mining rules as a run of `cfg` is checked and fingerprinted with (pipeline.rules.applied)."""
    return applied(mine_rules(), unused_mine_rules(cfg), recorded)


def mine_rules() -> dict[str, str]:
    """The code's rules that decide which pairs a mining run writes and their scores (pipeline.rules), each as
    'version: the rule', with its constants read from the code. Bump a rule's version with its code: a run started
    under another version of a rule is refused on resume, naming it.

    History: margin 1 was LASER's cos / mean as is (before e7a1871); center 1 left a row equal to its language's mean
    a zero vector (before 21370e5); knn 1 gave a tie on a GPU to any of its rows (before torch_tiles' tie order);
    vectors 1 used float16-stored rows as read (before 6b1fcb7); languages 1 took Norwegian Bokmal (nb, nob) for
    another language than no; languages 2 read a float lang value as Python writes it (1.0, nan); languages 3 did not match a macrolanguage
    with its individual languages other than the main one (ps and FLORES' pbt_Arab, qu and quy_Latn).
    """
    from pipeline.bitext.margin import RATIO_FLOOR
    from pipeline.bitext.store import CENTRED_MIN_NORM
    from pipeline.clustering.vectors import UNIT_TOLERANCE

    return {
        "vectors": f"2: an embeddings_uri row further than {UNIT_TOLERANCE} from unit length is divided by its norm",
        "languages": (
            "4: a lang_column value (an integral float as that integer, NaN null) is a listed lang as written or, "
            "both being language codes, when langcodes reads the same language (macrolanguage preferred, nb as no) and "
            "the script or region the lang writes, else, where the data holds none of the lang's own language, a "
            "macrolanguage and one other individual language of it (ISO 639-3)"
        ),
        "dedup": "1: texts deduplicated by exact string equality per side and language, the first row kept",
        "center": f"2: centred rows made unit length; a row within {CENTRED_MIN_NORM} of the mean keeps its direction",
        "knn": (
            "2: exact top-k by FAISS's per-pair inner product (CPU) or torch matmul tiles (GPU); ties at the k-th "
            "place go to the lower key row on both"
        ),
        "margin": (
            f"2: ratio max(cos, 0) / max((d(x) + d(y)) / 2, {RATIO_FLOOR}) with d the mean of max(cos, 0) over k "
            "neighbours; distance cos - (d(x) + d(y)) / 2 of plain cosines; absolute cos"
        ),
        "selection": "1: fwd/bwd best neighbour by score; max pools both and keeps a pair whose sentences are unused",
    }


def input_listings(cfg: MineConfig, listings: Listings) -> dict[str, tuple[Location, list[ListedFile]]]:
    """The inputs the fingerprint pins, by its field: `source.listing`, `target.listing` and, where given,
    `source.embeddings_listing` / `target.embeddings_listing`, each as (listing root, files)."""
    inputs = {}
    for name in ("source", "target"):
        side = getattr(cfg, name)
        inputs[f"{name}.listing"] = listings.files(side.uri, key=f"{name}.uri")
        if side.embeddings_uri:
            inputs[f"{name}.embeddings_listing"] = listings.files(side.embeddings_uri, key=f"{name}.embeddings_uri")
    return inputs


def pair_stage(src_lang: str, tgt_lang: str) -> str:
    """The stage of one pair's selection, named like its folder of the partitioned layout."""
    return f"pairs/src_lang={src_lang}/tgt_lang={tgt_lang}"


def kept_paths(stages: dict[str, Any], multi_pair: bool) -> list[str]:
    """The prefixes under output.uri that the recorded stages own (the rest is deleted before a resume)."""
    keep = [p for stage, paths in KEEP.items() if stage in stages for p in paths]
    pairs = [stage for stage in stages if stage.startswith("pairs/")]
    return keep + ([f"{stage}/" for stage in pairs] if multi_pair else ["pairs/"] if pairs else [])


def as_json(record: Any) -> Any:
    """The record as the stage marker holds it (tuples become lists), so a first run and a resumed one use the
    same values."""
    return json.loads(json.dumps(record))


def knn_record(stores: dict[tuple[str, str], StoreRef], sides: dict, knn: dict) -> dict[str, Any]:
    """What the selection needs of the stages up to the k-NN: the stores, the per-side facts, the knn files."""
    return as_json(
        {
            "stores": [[side, lang, dataclasses.asdict(s)] for (side, lang), s in stores.items()],
            "sides": sides,
            "knn": {**knn, "files": [[pair, d, uris] for (pair, d), uris in knn["files"].items()]},
        }
    )


def store_ref(fields: dict[str, Any]) -> StoreRef:
    return StoreRef(
        **{
            **fields,
            "text_files": tuple(tuple(f) for f in fields["text_files"]),
            "vector_files": tuple(tuple(f) for f in fields["vector_files"]),
        }
    )


def from_knn_record(record: dict[str, Any]) -> tuple[dict[tuple[str, str], StoreRef], dict, dict]:
    """knn_record's inverse: (stores, sides, knn)."""
    stores = {(side, lang): store_ref(fields) for side, lang, fields in record["stores"]}
    knn = {**record["knn"], "files": {(pair, d): uris for pair, d, uris in record["knn"]["files"]}}
    return stores, record["sides"], knn
