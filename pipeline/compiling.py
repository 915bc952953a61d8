"""torch.compile for the model actors: the model's repeated blocks, compiled once and shared (regional compilation).

A transformer is one block class repeated N times (Gemma-3's 18 `Gemma3DecoderLayer`s, BERT's 12 `BertLayer`s).
Compiling each block with dynamic shapes lets Dynamo reuse the first block's compiled code for the others (same
code, same guards; module parameters are graph inputs, not constants), so the compile costs about one block's
instead of the whole model's, and fuses what matters: the element-wise kernels between the matmuls (RMSNorm in
float32, GELU, rotary embeddings) live inside the blocks. This is PyTorch's "regional compilation" recipe
(https://docs.pytorch.org/tutorials/recipes/regional_compilation.html). Which modules are blocks comes from the model
class's own `_no_split_modules`, the list transformers keeps of the blocks that must stay whole on one device.
bench/gpu.sh measures it against the eager model and against compiling the whole model (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import inspect
from collections import Counter

import torch

try:  # torch's compile wrapper; its `_orig_mod` is the module it wraps (torch.compile's documented way back)
    from torch._dynamo.eval_frame import OptimizedModule
except ImportError:  # pragma: no cover -- a torch build without Dynamo
    OptimizedModule = ()  # type: ignore[assignment,misc]


# Compiled variants one block's code may hold. The blocks share one code object, so their variants add up: block
# kinds (T5's first block holds the position bias, ModernBERT and Gemma-3 alternate local and global attention) x
# Dynamo's own specializations of 1 row and of 1 token x a mask or none. Dynamo's default of 8 is reached by a 2-layer
# T5 and ModernBERT, after which new variants run eager for the rest of the process, silently (tests/test_compiling).
RECOMPILE_LIMIT = 64


def wants_compile(setting: bool | str, device: torch.device) -> bool:
    """`model.compile` for this device: true/false as set; 'auto' compiles on CUDA devices only (on a CPU the
    compile takes longer than it saves on one job: docs/performance.md)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def repeated_blocks(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """(parent, attribute name, block) for each instance of the model's repeated block class: of the classes in
    `_no_split_modules`, the ones with the most instances, two at least (BERT's list also names BertEmbeddings, once);
    outermost only (a block inside a block is compiled with its parent); [] when no listed class repeats."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    found: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    inside: set[int] = set()
    for parent in model.modules():
        if id(parent) in inside:
            continue
        for attr, child in parent.named_children():
            if type(child).__name__ in names and id(child) not in inside:
                found.append((parent, attr, child))
                inside.update(id(m) for m in child.modules())
    counts = Counter(type(block).__name__ for _, _, block in found)
    most = max(counts.values(), default=0)
    return [entry for entry in found if most >= 2 and counts[type(entry[2]).__name__] == most]


def compile_model(model: torch.nn.Module, regional: bool = True) -> torch.nn.Module:
    """Compile `model` for inference with dynamic shapes: one graph for every (rows, length) batch shape.

    regional=True puts a `torch.compile(block, dynamic=True)` wrapper in place of each repeated block (see the module
    docstring) and returns the same model object; a model whose class names no blocks, or regional=False, is
    wrapped whole. Compilation happens at the first forward pass (Dynamo is lazy), so compile errors surface there
    (`is_compile_error`); `uncompiled` undoes either form.
    """
    blocks = repeated_blocks(model) if regional else []
    if not blocks:
        return _compile(model)
    for parent, attr, block in blocks:
        setattr(parent, attr, _compile(block))  # a ModuleList takes "0", "1"... as names too
    return model


def _compile(module: torch.nn.Module) -> torch.nn.Module:
    """torch.compile with dynamic shapes and RECOMPILE_LIMIT: for this module alone where torch takes it as an
    argument (2.13+); before that by raising Dynamo's process-wide limit to it (never lowering it), which in a model
    actor's process concerns only this model (the H200 bench ran torch 2.11)."""
    if "recompile_limit" in inspect.signature(torch.compile).parameters:
        return torch.compile(module, dynamic=True, recompile_limit=RECOMPILE_LIMIT)
    raise_global_recompile_limit(torch._dynamo.config)  # pragma: no cover -- torch < 2.13
    return torch.compile(module, dynamic=True)  # pragma: no cover -- torch < 2.13


def raise_global_recompile_limit(config) -> None:
    """Dynamo's process-wide recompile limit raised to RECOMPILE_LIMIT, never lowered: `recompile_limit` since torch
    2.7, `cache_size_limit` before."""
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(int(getattr(config, name)), RECOMPILE_LIMIT))
            return


def eager_only() -> contextlib.AbstractContextManager:
    """A context in which compiled modules run their eager code and compile nothing: for rare calls (one row
    recomputed in float32) that would otherwise each compile a variant and take a place under RECOMPILE_LIMIT."""
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch 2.6+
    return set_stance("force_eager") if set_stance else contextlib.nullcontext()


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """The eager model again: `model` with every compile wrapper that compile_model put in it replaced by the module
    it wraps (in place), or the module a whole-model wrapper wraps."""
    if isinstance(model, OptimizedModule):
        return model._orig_mod
    for parent in list(model.modules()):
        for attr, child in list(parent.named_children()):
            if isinstance(child, OptimizedModule):
                setattr(parent, attr, child._orig_mod)
    return model


def is_compile_error(err: BaseException) -> bool:
    """An error raised by torch.compile's machinery (Dynamo tracing, the Inductor backend, a missing C++ compiler or
    Triton) rather than by the model's own computation, which the eager model would raise as well."""
    module = type(err).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "triton"))
