"""Split a model at a layer with torch.fx: a golden pass that caches every value live across
the cut, and a suffix that runs the rest of the network from those values.

Residual connections make the suffix need more than the cut layer's output (the skip branch,
shapes read earlier): the suffix takes every node computed before the cut and used after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn


class _LeafTracer(fx.Tracer):
    """Keeps the targeted modules as single ``call_module`` nodes."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self._leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self._leaves or super().is_leaf_module(m, module_qualified_name)


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


@dataclass
class Cut:
    """A split of the traced graph after one call of a layer."""

    layer: str
    live: list[fx.Node]       # values the suffix needs, the cut layer's output first
    layer_input: fx.Node | None  # the node feeding the layer (for weight faults)
    suffix: fx.GraphModule
    identity: bool            # nothing runs after the cut: the layer's output is the logits
    scalar_inputs: bool       # the suffix reads non-tensor values (shapes) from before the cut


class SplitModel:
    """A traced model that can cache golden values and replay the network after any layer."""

    def __init__(self, model: nn.Module, leaves: Sequence[str]) -> None:
        tracer = _LeafTracer(set(leaves))
        graph = tracer.trace(model)
        self.gm = fx.GraphModule(tracer.root, graph)
        self.nodes = list(self.gm.graph.nodes)
        self._pos = {node: i for i, node in enumerate(self.nodes)}
        self._calls: dict[str, list[fx.Node]] = {}
        for node in self.nodes:
            if node.op == "call_module":
                self._calls.setdefault(str(node.target), []).append(node)
        self._cuts: dict[str, Cut] = {}
        self._captures: dict[tuple[fx.Node, ...], fx.GraphModule] = {}

    def can_split(self, layer: str) -> bool:
        """True when ``layer`` is called exactly once in the traced graph."""
        return len(self._calls.get(layer, ())) == 1

    def cut(self, layer: str) -> Cut:
        if layer in self._cuts:
            return self._cuts[layer]
        node = self._calls[layer][0]
        here = self._pos[node]
        live = [node]
        for other in self.nodes[:here]:
            if other.op == "get_attr":
                continue  # re-read inside the suffix
            if any(self._pos[user] > here for user in other.users):
                live.append(other)
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for i, value in enumerate(live):
            env[value] = graph.placeholder(f"live_{i}")
        for other in self.nodes:
            if other.op == "get_attr" and any(self._pos[u] > here for u in other.users):
                env[other] = graph.node_copy(other, lambda a: env[a])
        output = None
        for other in self.nodes[here + 1 :]:
            if other.op == "output":
                output = other
                graph.output(fx.map_arg(other.args[0], lambda a: env[a]))
            elif other not in env:
                env[other] = graph.node_copy(other, lambda a: env[a])
        identity = output is not None and output.args[0] is node and all(
            n.op in ("output",) for n in self.nodes[here + 1 :]
        )
        args = [a for a in node.args if isinstance(a, fx.Node)]
        layer_input = args[0] if len(node.args) == 1 and len(args) == 1 and not node.kwargs else None
        cut = Cut(
            layer=layer,
            live=live,
            layer_input=layer_input,
            suffix=fx.GraphModule(self.gm, graph),
            identity=identity,
            scalar_inputs=False,
        )
        self._cuts[layer] = cut
        return cut

    def capture(self, x: torch.Tensor, wanted: Sequence[fx.Node],
                call: Callable[[nn.Module, torch.Tensor], Any] | None = None) -> tuple[Any, dict[fx.Node, Any]]:
        """Run the whole graph once: the output and a copy of every wanted node's value.

        Values are cloned as they are produced, so later in-place ops (``ReLU(inplace=True)``,
        ``out += identity``) cannot change what was cached.
        """
        key = tuple(sorted(set(wanted), key=self._pos.__getitem__))
        gm = self._captures.get(key)
        if gm is None:
            graph = fx.Graph()
            env: dict[fx.Node, fx.Node] = {}
            saved: list[fx.Node] = []
            for node in self.nodes:
                if node.op == "output":
                    graph.output((fx.map_arg(node.args[0], lambda a: env[a]), tuple(saved)))
                    continue
                env[node] = graph.node_copy(node, lambda a: env[a])
                if node in key:
                    saved.append(graph.call_function(_clone, (env[node],)))
            gm = fx.GraphModule(self.gm, graph)
            self._captures = {key: gm}  # keep one: the campaign moves layer by layer
        out, values = gm(x) if call is None else call(gm, x)
        return out, dict(zip(key, values))
