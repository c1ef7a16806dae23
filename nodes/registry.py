"""Typed nodes and the registry that serves them.

A node is a class whose inputs are declared once, as class attributes in order (see nodes/inputs.py), with its
outputs, display name and category on the class, and a `run` classmethod that is a function of its inputs and a small
context. From that one declaration the registry derives a `NodeSpec`: the `/object_info` entry in ComfyUI's exact
format, what validation checks, and how the executor calls the node. ComfyUI-style classes (INPUT_TYPES /
RETURN_TYPES / FUNCTION) become `NodeSpec`s too (nodes/legacy.py), so the server sees one kind of thing.

Example:
    class ImageInvert(Node):
        "Inverts the colours of an image."
        category = "image"
        image = Link("IMAGE")
        outputs = (Output("IMAGE"),)

        @classmethod
        def run(cls, ctx, image):
            return (1.0 - image,)

Nothing here imports torch: the server validates and schedules with specs alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from nodes.inputs import Files, Input

if TYPE_CHECKING:
    from nodes.context import RunContext

HIDDEN_KINDS = ("PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID")


@dataclass(frozen=True)
class Output:
    """One output slot: its type, optional display name, and whether it yields a list of items."""

    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None


@dataclass(frozen=True)
class Result:
    """What a node run returns: the output values (one per slot) and, for output nodes, the `ui` dict that becomes
    the `executed` websocket message and the history outputs (e.g. {"images": [{filename, subfolder, type}]}).

    expand   a graph that runs in the node's place (ComfyUI's graph expansion): an API prompt (what
             `GraphBuilder.finalize()` gives) whose links may also name nodes of the running prompt. A value in
             `values` may then be a link `[inner node id, slot]`: that output of the expansion becomes the node's.
             The inner nodes are cached one by one and may expand again (loops without recursion)."""

    values: tuple[Any, ...] = ()
    ui: Mapping[str, Any] | None = None
    expand: Mapping[str, Any] | None = None


class GraphBuilder:
    """Builds the graph a node returns as `Result(expand=...)`:

        graph = GraphBuilder()
        total = graph.node("Add", a=a_link, b=1)
        shown = graph.node("Show", value=total.out(0))
        return Result(values=(total.out(0),), expand=graph.finalize())

    Ids are local to the expansion ("1", "2", ... or the ones given); the executor places them under the expanding
    node's id. Inputs are values or links (`other.out(slot)`, or `[id, slot]` naming a node of the running prompt)."""

    def __init__(self) -> None:
        self.nodes: dict[str, BuiltNode] = {}
        self._next = 1

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> BuiltNode:
        if id is None:
            while str(self._next) in self.nodes:
                self._next += 1
            id = str(self._next)
        if id in self.nodes:
            return self.nodes[id]
        built = BuiltNode(id, class_type, dict(inputs))
        self.nodes[id] = built
        return built

    def lookup_node(self, id: str) -> BuiltNode | None:
        return self.nodes.get(id)

    def remove_node(self, id: str) -> None:
        del self.nodes[id]

    def finalize(self) -> dict[str, Any]:
        return {node.id: node.serialize() for node in self.nodes.values()}


@dataclass
class BuiltNode:
    """One node of a GraphBuilder."""

    id: str
    class_type: str
    inputs: dict[str, Any]
    override_display_id: str | None = None

    def out(self, slot: int) -> list[Any]:
        return [self.id, slot]

    def set_input(self, name: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(name, None)
        else:
            self.inputs[name] = value

    def get_input(self, name: str) -> Any:
        return self.inputs.get(name)

    def set_override_display_id(self, display_id: str) -> None:
        self.override_display_id = display_id

    def serialize(self) -> dict[str, Any]:
        serialized: dict[str, Any] = {"class_type": self.class_type, "inputs": dict(self.inputs)}
        if self.override_display_id is not None:
            serialized["override_display_id"] = self.override_display_id
        return serialized


class Node:
    """Base of every typed node. Declare inputs as class attributes, `outputs`, and a `run` classmethod (which may be
    `async def`: the executor awaits it on the worker's event loop, and an interrupt cancels it).

    Class attributes (all optional except `outputs` for non-output nodes):
      node_type      registered name (default: the class name); the `class_type` in prompts
      display_name   title shown in the editor (default: node_type)
      category       menu path, "/"-separated (default "sd", like ComfyUI)
      description    shown in the editor (default: the docstring; declare "" for none, as most ComfyUI nodes have)
      output_node    True for nodes that produce results (SaveImage, PreviewImage): prompts run from these
      always_run     True for nodes that must run on every prompt (never served from the cache)
      input_is_list  ComfyUI's INPUT_IS_LIST: receive whole lists instead of being mapped over items
      hidden         {argument name: "PROMPT" | "EXTRA_PNGINFO" | "UNIQUE_ID" | "DYNPROMPT"}
      v3_schema      True for nodes ComfyUI defines with its V3 schema (comfy_api io.ComfyNode): their /object_info
                     entry lists combos as ["COMBO", {"options": [...], "multiselect": false}], a null display_name
                     when none is declared, output_tooltips (null where an output has none), output_matchtypes,
                     deprecated, experimental and api_node
      output_tooltips  the output_tooltips list as served when it is not one per output (ComfyUI's
                     LoraLoaderModelOnly inherits LoraLoader's two); normally each Output's tooltip
    Optional classmethods:
      fingerprint(ctx, **literals) -> hashable   mixed into the cache key (e.g. a file's hash), like IS_CHANGED
      check_lazy(ctx, **inputs) -> [names]       which lazy inputs are needed, given those evaluated so far
      validate(**literals) -> str | None         extra validation; a string is the error detail
    """

    node_type: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    category: ClassVar[str] = "sd"
    description: ClassVar[str] = ""
    output_node: ClassVar[bool] = False
    always_run: ClassVar[bool] = False
    input_is_list: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    experimental: ClassVar[bool] = False
    search_aliases: ClassVar[tuple[str, ...]] = ()
    hidden: ClassVar[Mapping[str, str]] = {}
    v3_schema: ClassVar[bool] = False
    output_tooltips: ClassVar[tuple[str | None, ...] | None] = None
    outputs: ClassVar[tuple[Output, ...]] = ()
    declared_inputs: ClassVar[tuple[Input, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited = {i.name: i for i in getattr(cls, "declared_inputs", ())}
        own = {name: value for name, value in vars(cls).items() if isinstance(value, Input)}
        cls.declared_inputs = tuple({**inherited, **own}.values())
        if not cls.__dict__.get("node_type"):
            cls.node_type = cls.__name__
        for name, kind in cls.hidden.items():
            if kind not in HIDDEN_KINDS:
                raise TypeError(f"{cls.__name__}: hidden input {name!r} has unknown kind {kind!r}")

    def __init__(self) -> None:  # nodes are never instantiated: they hold no state
        raise TypeError(f"{type(self).__name__} is a node declaration; call spec.call(ctx, inputs) instead")

    @classmethod
    def run(cls, ctx: RunContext, **inputs: Any) -> tuple[Any, ...] | Result:
        raise NotImplementedError(f"{cls.__name__}.run")


@dataclass(frozen=True)
class NodeSpec:
    """Everything the server needs to know about a node type; derived from a declaration, never written by hand."""

    name: str
    display_name: str
    category: str
    description: str
    inputs: tuple[Input, ...]  # required first, then optional, each in declaration order
    outputs: tuple[Output, ...]
    hidden: Mapping[str, str]
    output_node: bool
    always_run: bool
    input_is_list: bool
    call: Callable[[RunContext, dict[str, Any]], Result | Awaitable[Result]]  # awaitable: an async node
    fingerprint: Callable[[RunContext, dict[str, Any]], Hashable] | None = None
    check_lazy: Callable[[RunContext, dict[str, Any]], Sequence[str]] | None = None
    validate: Callable[[dict[str, Any]], str | None] | None = None
    # ComfyUI's VALIDATE_INPUTS contract: the inputs it takes skip the built-in range and list checks (all of them
    # when it takes **kwargs); taking `input_types` skips the link type checks and receives {input: linked type}
    validate_takes: frozenset[str] = frozenset()
    validate_takes_all: bool = False
    validate_types: bool = False
    python_module: str = "nodes"
    deprecated: bool = False
    experimental: bool = False
    search_aliases: tuple[str, ...] = ()
    raw_input_types: Callable[[], Mapping[str, Any]] | None = None  # legacy nodes: INPUT_TYPES served verbatim
    v3_schema: bool = False  # ComfyUI's V3 encoding of the entry (Node.v3_schema)
    display_name_declared: bool = True  # False: the name stands in (a V3 entry then shows null)
    output_tooltips: tuple[str | None, ...] | None = None  # served verbatim when set (Node.output_tooltips)
    _by_name: Mapping[str, Input] = field(default_factory=dict, repr=False)
    _lazy: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {i.name: i for i in self.inputs})
        object.__setattr__(self, "_lazy", frozenset(i.name for i in self.inputs if i.lazy))

    def input(self, name: str) -> Input | None:
        return self._by_name.get(name)

    @property
    def output_types(self) -> tuple[str, ...]:
        return tuple(o.type for o in self.outputs)

    @property
    def lazy_inputs(self) -> frozenset[str]:
        return self._lazy

    def info(self, choices: Callable[[Input], Sequence[str] | None]) -> dict[str, Any]:
        """The `/object_info` entry, in ComfyUI's format. `choices` resolves combo lists (e.g. model files)."""
        if self.raw_input_types is not None:
            input_types = dict(self.raw_input_types())
        else:
            input_types = {"required": {i.name: self._input_schema(i, choices) for i in self.inputs if not i.optional}}
            optional = {i.name: self._input_schema(i, choices) for i in self.inputs if i.optional}
            if optional:
                input_types["optional"] = optional
            if self.hidden:
                input_types["hidden"] = dict(self.hidden)
        order = {section: list(entries) for section, entries in input_types.items() if isinstance(entries, Mapping)}
        info: dict[str, Any] = {
            "input": input_types,
            "input_order": order,
            "is_input_list": self.input_is_list,
            "output": [o.type for o in self.outputs],
            "output_is_list": [o.is_list for o in self.outputs],
            "output_name": [o.name or o.type for o in self.outputs],
        }
        tooltips = list(self.output_tooltips) if self.output_tooltips is not None else [o.tooltip for o in self.outputs]
        if self.v3_schema:
            info["output_tooltips"] = tooltips
            info["output_matchtypes"] = None
        info.update({
            "name": self.name,
            "display_name": self.display_name if self.display_name_declared or not self.v3_schema else None,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        })
        if not self.v3_schema and any(tooltips):
            info["output_tooltips"] = [t or "" for t in tooltips]
        if self.search_aliases:
            info["search_aliases"] = list(self.search_aliases)
        if self.v3_schema:
            info.update(deprecated=self.deprecated, experimental=self.experimental, api_node=False)
        else:
            if self.deprecated:
                info["deprecated"] = True
            if self.experimental:
                info["experimental"] = True
        return info

    def _input_schema(self, declared: Input, choices: Callable[[Input], Sequence[str] | None]) -> list[Any]:
        schema = declared.schema(choices(declared))
        if self.v3_schema and isinstance(schema[0], list):
            # V3 combos name their type and carry the choices among the options.
            return ["COMBO", {**(schema[1] if len(schema) > 1 else {}), "multiselect": False, "options": schema[0]}]
        return schema


def spec_of(node: type[Node], *, python_module: str = "nodes") -> NodeSpec:
    """Derive the NodeSpec of a typed node class."""
    if not (isinstance(node, type) and issubclass(node, Node)):
        raise TypeError(f"{node!r} is not a Node subclass")
    required = [i for i in node.declared_inputs if not i.optional]
    optional = [i for i in node.declared_inputs if i.optional]
    if not node.outputs and not node.output_node:
        raise TypeError(f"{node.__name__} declares no outputs and is not an output node")
    declares_description = any("description" in vars(k) for k in node.__mro__ if k is not Node and issubclass(k, Node))
    description = node.description if declares_description else " ".join((node.__doc__ or "").split())
    declares_display_name = bool(node.display_name)

    def normalized(result: Any) -> Result:
        if isinstance(result, Result):
            return result
        if isinstance(result, tuple):
            return Result(values=result)
        raise TypeError(f"{node.__name__}.run returned {type(result).__name__}; expected a tuple or Result")

    async def finish(pending: Awaitable[Any]) -> Result:
        return normalized(await pending)

    def call(ctx: RunContext, inputs: dict[str, Any]) -> Result | Awaitable[Result]:
        result = node.run(ctx, **inputs)
        return finish(result) if inspect.isawaitable(result) else normalized(result)

    def optional_classmethod(name: str) -> Callable[..., Any] | None:
        method = getattr(node, name, None)
        return method if callable(method) else None

    fingerprint = optional_classmethod("fingerprint")
    check_lazy = optional_classmethod("check_lazy")
    validate = optional_classmethod("validate")
    return NodeSpec(
        name=node.node_type,
        display_name=node.display_name or node.node_type,
        category=node.category,
        description=description,
        inputs=tuple(required + optional),
        outputs=tuple(node.outputs),
        hidden=dict(node.hidden),
        output_node=node.output_node,
        always_run=node.always_run,
        input_is_list=node.input_is_list,
        call=call,
        fingerprint=(lambda ctx, literals: fingerprint(ctx, **literals)) if fingerprint else None,
        check_lazy=(lambda ctx, available: list(check_lazy(ctx, **available))) if check_lazy else None,
        validate=(lambda literals: validate(**literals)) if validate else None,
        python_module=python_module,
        deprecated=node.deprecated,
        experimental=node.experimental,
        search_aliases=tuple(node.search_aliases),
        v3_schema=node.v3_schema,
        display_name_declared=declares_display_name,
        output_tooltips=tuple(node.output_tooltips) if node.output_tooltips is not None else None,
    )


class DuplicateNode(ValueError):
    def __init__(self, name: str, first: str, second: str):
        super().__init__(f"node type {name!r} from {second} is already registered by {first}")
        self.name, self.first, self.second = name, first, second


class Registry:
    """The node types one server knows, by name. Built by the app factory (or a test), never a module global.

    `list_files(folder)` resolves `Files` combo choices (model files, input images); without it they are empty.
    """

    def __init__(self, list_files: Callable[[Files], Sequence[str]] | None = None):
        self._specs: dict[str, NodeSpec] = {}
        self._sources: dict[str, str] = {}
        self._list_files = list_files

    def add(self, node: type[Node] | NodeSpec, *, source: str = "core", replace: bool = False) -> NodeSpec:
        spec = node if isinstance(node, NodeSpec) else spec_of(node, python_module=_module_label(source))
        if spec.name in self._specs and not replace:
            raise DuplicateNode(spec.name, self._sources[spec.name], source)
        self._specs[spec.name] = spec
        self._sources[spec.name] = source
        return spec

    def add_all(self, nodes: Iterable[type[Node] | NodeSpec], *, source: str = "core") -> None:
        for node in nodes:
            self.add(node, source=source)

    def get(self, name: str) -> NodeSpec | None:
        return self._specs.get(name)

    def source(self, name: str) -> str | None:
        return self._sources.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def choices(self, declared: Input) -> Sequence[str] | None:
        """The current choices of a combo input (None for other inputs)."""
        source = getattr(declared, "source", None)
        if source is None:
            return None
        if isinstance(source, Files):
            return list(self._list_files(source)) if self._list_files else []
        if callable(source):
            return list(source())
        return list(source)

    def object_info(self, name: str | None = None) -> dict[str, Any]:
        """`/object_info` (all nodes) or `/object_info/{name}` (one node, `{}` when unknown, as ComfyUI)."""
        names = self._specs if name is None else ([name] if name in self._specs else [])
        return {n: self._specs[n].info(self.choices) for n in names}


def _module_label(source: str) -> str:
    return "nodes" if source == "core" else f"custom_nodes.{source}"
