"""Where hardening goes in a model: torch.fx sites, new modules after them, and the hook fallback.

A hardened model keeps every original module under its original qualified name (the engine,
campaigns and reports name layers by it); what hardening adds lives under one ``hs_harden``
``ModuleDict`` of non-injectable modules. With torch.fx the additions are nodes inserted after
the sites; a model fx cannot trace gets forward hooks on its activation modules instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from headstrong.engine import is_injectable

_PRESERVED = "_user_preserved_attributes"  # GraphModule.meta key whose entries deepcopy restores
HARDEN_ATTR = "hs_harden"
# Attributes of headstrong's own models that a GraphModule would drop; copied over.
KEPT_ATTRS = ("spec", "classifier_name", "num_classes", "embed_dim", "max_logit_scale", "hardening")

ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.LeakyReLU,
    nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.PReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.RReLU,
)
ACTIVATION_FUNCTIONS: frozenset[Any] = frozenset({
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.leaky_relu, F.elu, F.selu, F.celu, F.mish, F.softplus, F.sigmoid, F.tanh,
    torch.sigmoid, torch.tanh, F.prelu, torch.nn.functional.rrelu,
})
ACTIVATION_METHODS = frozenset({"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"})
WHERE = ("activations", "layers", "activations+logits")
LOGITS = "logits"  # the site key of the model's output


@dataclass(frozen=True)
class Site:
    """One place a module is inserted after: a stable ``key`` and its fx node (None with hooks)."""

    key: str
    node: Optional[fx.Node]
    module: Optional[str]  # the called module's name, for a call_module site


class _Tracer(fx.Tracer):
    """Keeps injectable layers, activation modules and earlier hardening as single calls, so
    that subclasses from other libraries (timm's LayerNorm) keep their names in the graph."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (is_injectable(m) or isinstance(m, ACTIVATION_MODULES)
                or module_qualified_name.split(".")[0] == HARDEN_ATTR
                or super().is_leaf_module(m, module_qualified_name))


def trace(model: nn.Module) -> tuple[Optional[fx.GraphModule], Optional[str]]:
    """``(graph module, None)``, or ``(None, why)`` when torch.fx cannot trace ``model``."""
    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__), None
    except Exception as error:  # noqa: BLE001  any tracing failure means: use hooks
        return None, f"{type(error).__name__}: {error}"


def _is_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in ACTIVATION_METHODS


def fx_sites(gm: fx.GraphModule, where: str) -> list[Site]:
    """Activation calls (modules, functions, tensor methods) or injectable-layer calls, in order.

    A module called twice gives two sites (``name`` and ``name#1``); a functional activation is
    keyed by its fx node name (``relu_2``).
    """
    sites: list[Site] = []
    seen: dict[str, int] = {}
    if where == "activations+logits":
        output = next(n for n in gm.graph.nodes if n.op == "output")
        result = output.args[0]
        if not isinstance(result, fx.Node):
            raise ValueError("where='activations+logits' needs a model that returns one tensor of logits")
        return [*fx_sites(gm, "activations"), Site(LOGITS, result, None)]
    for node in gm.graph.nodes:
        module = str(node.target) if node.op == "call_module" else None
        if module is not None and module.split(".")[0] == HARDEN_ATTR:
            continue
        if where == "activations":
            wanted = _is_activation(gm, node)
        else:
            wanted = module is not None and is_injectable(gm.get_submodule(module))
        if not wanted:
            continue
        if module is not None:
            count = seen.get(module, 0)
            seen[module] = count + 1
            key = module if count == 0 else f"{module}#{count}"
        else:
            key = node.name
        sites.append(Site(key, node, module))
    return sites


def hook_sites(model: nn.Module, where: str = "activations") -> list[Site]:
    """Activation modules by name, for a model fx cannot trace (functional calls stay unseen);
    with ``activations+logits`` also the model's own output (a hook on the root module)."""
    sites = [Site(name, None, name) for name, m in model.named_modules()
             if name and isinstance(m, ACTIVATION_MODULES) and name.split(".")[0] != HARDEN_ATTR]
    return [*sites, Site(LOGITS, None, "")] if where == "activations+logits" else sites


def harden_dict(model: nn.Module) -> nn.Module:
    """The model's ``hs_harden`` container, created on first use (a GraphModule built from a
    hardened model holds it as a plain Module: children are read with ``named_children``)."""
    store = getattr(model, HARDEN_ATTR, None)
    if store is None:
        store = nn.ModuleDict()
        model.add_module(HARDEN_ATTR, store)
    return store


def new_slot(model: nn.Module, prefix: str, module: nn.Module) -> str:
    """Register ``module`` under ``hs_harden`` with a fresh name; returns its qualified name."""
    store = harden_dict(model)
    taken = {name for name, _ in store.named_children()}
    index = 0
    while f"{prefix}_{index}" in taken:
        index += 1
    name = f"{prefix}_{index}"
    store.add_module(name, module)
    return f"{HARDEN_ATTR}.{name}"


def insert_after(gm: fx.GraphModule, node: fx.Node, target: str, extra: tuple[Any, ...] = ()) -> fx.Node:
    """Call module ``target`` on ``node``'s value (and ``extra`` args); every later use reads it."""
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(target, (node, *extra))
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    return new


def finish(gm: fx.GraphModule, source: nn.Module) -> fx.GraphModule:
    """Recompile the edited graph and carry over the source model's headstrong attributes."""
    gm.graph.lint()
    gm.recompile()
    for attr in KEPT_ATTRS:
        if hasattr(source, attr):
            keep_attr(gm, attr, copy.deepcopy(getattr(source, attr)))
    gm.train(source.training)
    return gm


def keep_attr(model: nn.Module, name: str, value: Any) -> None:
    """Set a plain attribute that survives ``copy.deepcopy`` of a GraphModule too."""
    setattr(model, name, value)
    if isinstance(model, fx.GraphModule):
        model.meta.setdefault(_PRESERVED, {})[name] = value


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy sharing nothing with the caller's model (parameters, buffers, hooks)."""
    return copy.deepcopy(model)


def records(model: nn.Module) -> list[dict[str, Any]]:
    """The hardening steps already applied to ``model`` (oldest first)."""
    return list(getattr(model, "hardening", None) or [])


def add_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    keep_attr(model, "hardening", [*records(model), record])
    return model


def site_input(node: fx.Node) -> Optional[fx.Node]:
    """The single tensor argument feeding a call_module node (None when there are several)."""
    args = [a for a in node.args if isinstance(a, fx.Node)]
    return args[0] if len(args) == 1 and not node.kwargs else None
