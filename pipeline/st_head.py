"""The sentence-transformers modules that run after pooling (Dense projections), as torch modules.

A model such as LaBSE (CLS -> Dense 768->768 tanh) or EmbeddingGemma (mean -> Dense 768->3072 -> Dense 3072->768)
gives its trained vectors only after them; pooled states alone are another space, and another dimension.
pipeline.model_defaults.module_layout reads which Dense modules a model declares (JSON only); this module loads
their weights, in the model actor.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import UserError
from pipeline.model_defaults import DenseSpec, model_file, module_layout


class Dense(nn.Module):
    """sentence-transformers' Dense: `activation(linear(x))`, plus x (or a bias-free projection of it) with
    use_residual. Parameter names match its saved weights (`linear.weight`, `linear.bias`, `residual.weight`)."""

    def __init__(self, spec: DenseSpec, activation: nn.Module):
        super().__init__()
        self.linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        self.activation_function = activation
        self.use_residual = spec.use_residual
        if spec.use_residual and spec.in_features != spec.out_features:
            self.residual = nn.Linear(spec.in_features, spec.out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        out = self.activation_function(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return out


def activation(cfg: ModelConfig, spec: DenseSpec) -> nn.Module:
    """The activation class named in the Dense config (outside torch only with model.trust_remote_code, which
    pipeline.model_defaults.check_dense enforces).

    Raises:
        UserError: the name does not import or is not an nn.Module class.
    """
    name = spec.activation
    module_name, _, attr = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"model {cfg.name_or_path}: Dense activation {name!r} does not import: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UserError(f"model {cfg.name_or_path}: Dense activation {name!r} is not a torch.nn.Module class")
    return cls()


def load_weights(cfg: ModelConfig, spec: DenseSpec) -> dict[str, torch.Tensor]:
    """The Dense module's saved tensors: model.safetensors, else pytorch_model.bin (which check_dense allows only
    with model.allow_pickle_weights)."""
    path = model_file(cfg, f"{spec.path}/model.safetensors")
    if path is not None:
        from safetensors.torch import load_file

        return load_file(str(path))
    pickle = model_file(cfg, f"{spec.path}/pytorch_model.bin")
    return torch.load(str(pickle), map_location="cpu", weights_only=True)


def load_head(cfg: ModelConfig) -> nn.Module | None:
    """The model's Dense modules in order, float32, in eval mode; None when it declares none.

    Raises:
        UserError: see pipeline.model_defaults.module_layout and check_dense, and activation; also weights that do
            not fit the declared shapes.
    """
    specs = module_layout(cfg).dense
    if not specs:
        return None
    layers = []
    for spec in specs:
        layer = Dense(spec, activation(cfg, spec))
        try:
            layer.load_state_dict(load_weights(cfg, spec))
        except RuntimeError as err:
            raise UserError(f"model {cfg.name_or_path}: Dense module {spec.path!r} weights do not fit: {err}") from err
        layers.append(layer)
    return nn.Sequential(*layers).float().eval()
