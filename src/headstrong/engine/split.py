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

    def node_of(self, layer: str) -> fx.Node:
        """The graph node of a layer called once (``can_split``)."""
        return self._calls[layer][0]

    def position(self, node: fx.Node) -> int:
        """A node's place in the graph's execution order."""
        return self._pos[node]

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

    @property
    def value_nodes(self) -> list[fx.Node]:
        """Every node that computes a value (the golden cache for pruned replays)."""
        return [n for n in self.nodes if n.op not in ("output", "get_attr")]

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


# Ops through which a change of one row always stays a change (up to rounding): no comparison.
_PASS_MODULES: tuple[type, ...] = (
    nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
    nn.Identity, nn.Flatten, nn.Dropout, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)
_PASS_FUNCTIONS = {"add", "iadd", "sub", "mul", "truediv", "flatten", "cat", "getitem", "mean", "reshape", "view",
                   "permute", "transpose", "contiguous", "add_", "mul_", "unsqueeze", "squeeze", "expand", "matmul",
                   "linear", "conv2d", "layer_norm", "batch_norm", "adaptive_avg_pool2d", "avg_pool2d", "dropout"}


def _may_mask(node: fx.Node, gm: nn.Module, held: frozenset[str]) -> bool:
    """True when ``node`` can turn a changed input back into the golden output (ReLU, max pool,
    saturation, quantisation of a held layer), so rows are worth comparing after it."""
    if node.op == "call_module":
        if str(node.target) in held:
            return True
        return not isinstance(gm.get_submodule(str(node.target)), _PASS_MODULES)
    if node.op in ("call_function", "call_method"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        return name not in _PASS_FUNCTIONS
    return False


def _fetch(gm: nn.Module, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


QUIET_LIMIT = 12  # comparisons in a row that dropped nothing before a replay stops comparing


class PrunedReplay:
    """Run the network after a cut node by node, dropping rows whose fault has been masked.

    A row (one fault on one image) is dropped as soon as every value still needed downstream
    equals the golden one, bit for bit (a ReLU or a saturation swallowed the flip): its outcome
    is the golden outcome, so the rest of the network runs on fewer rows. Needs the golden value
    of every node (``SplitModel.capture`` of ``SplitModel.tensor_nodes``).
    """

    def __init__(self, split: SplitModel, cut: Cut, held: frozenset[str] = frozenset()) -> None:
        self.split = split
        self.cut = cut
        # Values are compared with the golden ones only after ops that can swallow a change
        # (ReLU, pooling, quantisation of held layers...); linear ops pass the flags through.
        self.check = {n for n in split.nodes if _may_mask(n, split.gm, held)}
        self.trace: list[tuple[str, int]] | None = None  # set to a list to record rows alive per node
        node = split.node_of(cut.layer)
        self.here = split.position(node)
        self.node = node
        self.after = split.nodes[self.here + 1 :]
        # how many times each node is read after the cut
        self.reads: dict[fx.Node, int] = {}
        for other in self.after:
            for arg in other.all_input_nodes:
                self.reads[arg] = self.reads.get(arg, 0) + 1

    def run(self, start: torch.Tensor, rows: torch.Tensor, golden: dict[fx.Node, Any]) -> tuple[Any, torch.Tensor]:
        """Faulty output of the rows still alive, and which rows (positions in ``rows``) they are."""
        split = self.split
        active = torch.arange(len(rows), device=rows.device)
        grows = rows
        gathered: dict[fx.Node, Any] = {}
        env: dict[fx.Node, Any] = {self.node: start}
        differs: dict[fx.Node, Any] = {}
        left = dict(self.reads)
        quiet = 0

        def golden_rows(node: fx.Node) -> Any:
            if node not in gathered:
                value = golden[node]
                batch = len(golden[self.node])
                gathered[node] = (value.index_select(0, grows)
                                  if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch
                                  else value)
            return gathered[node]

        def compare(node: fx.Node, value: Any) -> None:
            if node not in self.check and node is not self.node:
                flags = [differs.get(a, False) for a in node.all_input_nodes if a in env]
                if not isinstance(value, torch.Tensor) or any(f is None for f in flags):
                    differs[node] = None
                    return
                merged = torch.zeros(len(active), dtype=torch.bool, device=active.device)
                for f in flags:
                    merged = merged | f
                differs[node] = merged
                return
            if isinstance(value, torch.Tensor) and node in golden and value.dim() and value.shape[0] == len(active):
                ref = golden_rows(node)
                if ref.shape == value.shape:
                    differs[node] = (value != ref).reshape(len(value), -1).any(1)
                    return
            differs[node] = None  # not comparable: keeps every row alive while it is needed

        compare(self.node, start)

        def lookup(arg: fx.Node) -> Any:
            if arg in env:
                return env[arg]
            if arg.op == "get_attr":
                return _fetch(split.gm, str(arg.target))
            return golden_rows(arg)

        for node in self.after:
            if node.op == "output":
                return fx.map_arg(node.args[0], lookup), active
            args = fx.map_arg(node.args, lookup)
            kwargs = fx.map_arg(node.kwargs, lookup)
            if node.op == "call_module":
                value = split.gm.get_submodule(str(node.target))(*args, **kwargs)
            elif node.op == "call_function":
                value = node.target(*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], str(node.target))(*args[1:], **kwargs)
            elif node.op == "get_attr":
                value = _fetch(split.gm, str(node.target))
            else:
                raise ValueError(f"unexpected node {node.op} after the cut")
            env[node] = value
            if self.trace is not None:
                self.trace.append((node.name, len(active)))
            if quiet >= QUIET_LIMIT:  # rows stopped dying: just run the rest
                for arg in node.all_input_nodes:
                    if arg in left:
                        left[arg] -= 1
                        if left[arg] == 0:
                            env.pop(arg, None)
                continue
            compare(node, value)
            for arg in node.all_input_nodes:
                if arg in left:
                    left[arg] -= 1
                    if left[arg] == 0 and arg in env:
                        del env[arg]
                        differs.pop(arg, None)
            flags = [differs[n] for n in env if n in differs and left.get(n, 0) > 0]
            if not flags or any(f is None for f in flags):
                continue
            alive = flags[0]
            for f in flags[1:]:
                alive = alive | f
            if bool(alive.all()):
                quiet += 1
                continue
            quiet = 0
            keep = alive.nonzero().flatten()
            before = len(alive)
            active = active.index_select(0, keep)
            grows = grows.index_select(0, keep)
            gathered.clear()
            if len(active) == 0:
                return None, active
            for n in list(env):
                value = env[n]
                if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == before:
                    env[n] = value.index_select(0, keep)
                if differs.get(n) is not None:
                    differs[n] = differs[n].index_select(0, keep)
        raise ValueError("the traced graph has no output node")
