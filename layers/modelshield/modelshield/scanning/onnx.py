"""ONNX scanner: the ModelProto read at wire level, without the onnx package and without loading weights.

What an ONNX file can do to the machine that loads it:
- external data: an initializer's bytes live in another file named by `location`, resolved against the
  model's directory. `../../etc/passwd`, an absolute path or another drive make the runtime read (and in
  some tools copy or overwrite) files outside the model; onnxruntime also honours a magic location
  `*/_ORT_MEM_ADDR_/*` that reads process memory at `offset`. -> MS-ARCHIVE-UNSAFE
- custom operator domains: an op in a domain the runtime does not ship runs native code from a library the
  caller must register (onnxruntime-extensions even runs Python ops). -> MS-CODE-UNKNOWN
- architectural backdoors: a graph that compares (a function of) its input with a constant "trigger" and
  uses the result to switch its output (Where/If, or arithmetic blending). -> MS-BACKDOOR (a heuristic:
  see docs/scanner-formats.md for what is and is not detected)

Subgraphs (If/Loop/Scan attributes, training-info graphs, local functions) are walked with a depth bound.
Initializer payloads (raw_data, float_data, ...) are skipped by seeking, never read.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.protobuf import I32, LEN, VARINT, Field, ProtoReader, WireError
from modelshield.scanning.registry import ScanContext, register

# Domains whose operators ship with ONNX itself or with onnxruntime (no user library needed).
STANDARD_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.preview",
        "ai.onnx.preview.training",
        "ai.onnx.training",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.experimental",
        "com.ms.internal.nhwc",
    }
)
# Domains known to run user-supplied Python (onnxruntime-extensions' PyOp), reported as code execution.
PYTHON_OP_DOMAINS = frozenset({"ai.onnx.contrib"})

MAX_GRAPH_DEPTH = 16  # subgraph nesting (If inside Loop inside ...)
MAX_NAME_BYTES = 64 * 1024  # a tensor/op/domain name; longer ones are reported, not read
MAX_NODES = 500_000  # nodes kept in memory for the dataflow analysis (all nodes are still checked)
MAX_BACKDOOR_HOPS = 3  # nodes allowed between a trigger-controlled switch and a graph output
ORT_MEMORY_LOCATION = "*/_ORT_MEM_ADDR_/*"

COMPARISONS = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"})
# Ops through which a trigger stays a trigger (boolean logic, casts, reductions, reshaping, scaling by
# constants). Anything else (a MatMul with real data, attention, ...) ends the trigger.
TRIGGER_PRESERVING = frozenset(
    {
        "Not",
        "And",
        "Or",
        "Xor",
        "Cast",
        "CastLike",
        "Identity",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "Tile",
        "Transpose",
        "Concat",
        "Slice",
        "Gather",
        "ReduceMin",
        "ReduceMax",
        "ReduceSum",
        "ReduceMean",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ArgMax",
        "ArgMin",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Neg",
        "Abs",
        "Min",
        "Max",
    }
)
ARITHMETIC_MIXERS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"})
# Ops whose output is a property of the input's shape, not of its values.
SHAPE_OPS = frozenset({"Shape", "Size"})
# Ops that keep an all-zero tensor all zero (a zero fill stays a zero fill through them).
ZERO_PRESERVING = frozenset(
    {"Identity", "Cast", "CastLike", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Tile",
     "Transpose", "Slice", "Gather", "GatherElements", "Neg", "Mul"}
)  # fmt: skip
# Reductions for which a zero element is neutral: a zero fill only removes elements from the aggregate.
SUM_REDUCTIONS = frozenset({"ReduceSum", "ReduceMean", "ReduceL1", "ReduceL2", "ReduceSumSquare"})
MAX_SMALL_CONSTANT_BYTES = 16  # a single-element constant's payload, read to tell a zero fill
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)
_DRIVE = re.compile(r"^[A-Za-z]:")


# -- model structure (just what the checks need) ---------------------------------------------------------
# TensorProto payload fields: float_data, int32_data, int64_data, raw_data, double_data, uint64_data.
_NUMERIC_PAYLOADS = frozenset({4, 5, 7, 9, 10, 11})


@dataclass
class Node:
    op_type: str = ""
    domain: str = ""
    name: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    offset: int = 0
    zero_fill: bool = False  # a Constant whose value is a single zero


@dataclass(frozen=True)
class _Tensor:
    name: str
    zero_fill: bool = False  # exactly one element, equal to zero (all payload bytes zero)


@dataclass
class Graph:
    name: str = ""
    nodes: list[Node] = field(default_factory=list)
    initializers: set[str] = field(default_factory=set)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    static_inputs: set[str] = field(default_factory=set)  # graph inputs whose declared dims are all fixed
    zero_constants: set[str] = field(default_factory=set)  # single-element constants equal to zero


@dataclass
class _ModelFacts:
    ir_version: int | None = None
    opsets: dict[str, int] = field(default_factory=dict)
    local_functions: set[tuple[str, str]] = field(default_factory=set)
    external_locations: list[str] = field(default_factory=list)
    custom_ops: dict[tuple[str, str], int] = field(default_factory=dict)  # (domain, op) -> first offset


# -- sniffing -----------------------------------------------------------------------------------------
# ModelProto field numbers and the wire type each must have (unknown numbers are allowed by protobuf).
_MODEL_WIRE_TYPES = {1: VARINT, 2: LEN, 3: LEN, 4: LEN, 5: VARINT, 6: LEN, 7: LEN, 8: LEN, 14: LEN, 20: LEN}
_MODEL_WIRE_TYPES |= {25: LEN, 26: LEN}


def sniff_onnx(head: bytes, stream: BinaryIO) -> bool:
    """A ModelProto: ir_version (field 1, varint) first, and a graph (field 7) somewhere at top level."""
    if len(head) < 4 or head[0] != 0x08:
        return False
    reader = ProtoReader(stream)
    seen_graph = False
    try:
        for count, f in enumerate(reader.fields()):
            if count == 0 and not (f.number == 1 and f.wire_type == VARINT and 1 <= f.value <= 64):
                return False
            expected = _MODEL_WIRE_TYPES.get(f.number)
            if expected is None or f.wire_type != expected:
                return False
            seen_graph = seen_graph or f.number == 7
            if count > 10_000:
                return False
    except WireError:
        # A truncated or corrupt model that starts like ONNX is still claimed, so the scanner can say
        # "malformed" instead of "unknown format".
        return _looks_like_onnx_prefix(reader)
    return seen_graph


def _looks_like_onnx_prefix(reader: ProtoReader) -> bool:
    """ir_version, then the tag of another ModelProto field with the right wire type (payload may be cut)."""
    try:
        number, wire_type, pos = reader.tag_at(0)
        if (number, wire_type) != (1, VARINT):
            return False
        version, pos = reader.varint_at(pos)
        number, wire_type, _ = reader.tag_at(pos)
    except WireError:
        return False
    return 1 <= version <= 64 and _MODEL_WIRE_TYPES.get(number) == wire_type


# -- scanning ------------------------------------------------------------------------------------------
@register(Format.ONNX, sniff=sniff_onnx, priority=70)
def scan_onnx(stream: BinaryIO, ctx: ScanContext) -> None:
    """Walk the ModelProto; report external-data escapes, custom domains and trigger-switch patterns."""
    reader = ProtoReader(stream)
    walker = _Walker(reader, ctx)
    try:
        walker.walk_model()
    except WireError as exc:
        ctx.add(
            RuleId.MALFORMED,
            Severity.HIGH,
            f"ONNX protobuf does not parse: {exc}; runtimes may read it differently",
            offset=exc.offset,
        )
        ctx.incomplete("ONNX model only partly scanned (protobuf parse error)", offset=exc.offset)
    walker.report()


class _Walker:
    """Reads the fields the checks need, reporting as it goes."""

    def __init__(self, reader: ProtoReader, ctx: ScanContext) -> None:
        self.r = reader
        self.ctx = ctx
        self.limit = min(MAX_NAME_BYTES, ctx.limits.max_metadata_bytes)
        self.facts = _ModelFacts()
        self.main_graphs: list[Graph] = []
        self.nodes_seen = 0

    def _text(self, f: Field) -> str:
        if f.wire_type != LEN:
            raise WireError(f"field {f.number} should be a string", f.offset)
        if f.value > self.limit:
            self.ctx.add(
                RuleId.MALFORMED,
                Severity.MEDIUM,
                f"a {f.value}-byte name/string in the ONNX graph (over {self.limit} bytes): not read",
                offset=f.offset,
            )
            return "<oversized>"
        return self.r.text_of(f, self.limit)

    # -- model -----------------------------------------------------------------------------------
    def walk_model(self) -> None:
        graphs: list[Field] = []
        for f in self.r.fields():
            self.ctx.tick()
            if f.number == 1 and f.wire_type == VARINT:
                self.facts.ir_version = f.value
            elif f.number == 7 and f.wire_type == LEN:
                graphs.append(f)
            elif f.number == 8 and f.wire_type == LEN:
                domain, version = self._opset(f)
                self.facts.opsets[domain] = version
            elif f.number == 14 and f.wire_type == LEN:
                key, value = self._string_entry(f)
                if key.strip().lower() == "license" and value:
                    self.ctx.set_metadata("license", value)
            elif f.number == 20 and f.wire_type == LEN:
                for g in self.r.fields(f.offset, f.end):
                    if g.number in (1, 2) and g.wire_type == LEN:
                        self.walk_graph(g, depth=1)
            elif f.number == 25 and f.wire_type == LEN:
                self.walk_function(f)
        if self.facts.ir_version is None:
            self.ctx.add(RuleId.MALFORMED, Severity.MEDIUM, "ONNX model without ir_version")
        if not graphs:
            self.ctx.add(RuleId.MALFORMED, Severity.HIGH, "ONNX model without a graph")
        # protobuf merges repeated occurrences of a singular message field: so do we (all nodes count).
        merged = Graph()
        for g in graphs:
            part = self.walk_graph(g, depth=0)
            merged.name = merged.name or part.name
            merged.nodes += part.nodes
            merged.initializers |= part.initializers
            merged.inputs += part.inputs
            merged.outputs += part.outputs
            merged.static_inputs |= part.static_inputs
            merged.zero_constants |= part.zero_constants
        if graphs:
            self.main_graphs.append(merged)

    def _opset(self, f: Field) -> tuple[str, int]:
        domain, version = "", 0
        for g in self.r.fields(f.offset, f.end):
            if g.number == 1 and g.wire_type == LEN:
                domain = self._text(g)
            elif g.number == 2 and g.wire_type == VARINT:
                version = g.as_signed()
        return domain, version

    def _string_entry(self, f: Field) -> tuple[str, str]:
        key = value = ""
        for g in self.r.fields(f.offset, f.end):
            if g.number == 1 and g.wire_type == LEN:
                key = self._text(g)
            elif g.number == 2 and g.wire_type == LEN:
                value = self._text(g)
        return key, value

    def walk_function(self, f: Field) -> None:
        """FunctionProto: its name/domain define a local op; its nodes are checked like graph nodes."""
        name = domain = ""
        nodes: list[Field] = []
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.number == 1 and g.wire_type == LEN:
                name = self._text(g)
            elif g.number == 10 and g.wire_type == LEN:
                domain = self._text(g)
            elif g.number == 7 and g.wire_type == LEN:
                nodes.append(g)
        self.facts.local_functions.add((domain, name))
        for n in nodes:
            self.walk_node(n, depth=1)

    # -- graph -----------------------------------------------------------------------------------
    def walk_graph(self, f: Field, *, depth: int) -> Graph:
        graph = Graph()
        if depth > MAX_GRAPH_DEPTH:
            self.ctx.incomplete(
                f"ONNX subgraphs nested deeper than {MAX_GRAPH_DEPTH}: deeper graphs not scanned",
                offset=f.offset,
            )
            return graph
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.wire_type != LEN:
                continue
            if g.number == 1:
                node = self.walk_node(g, depth=depth)
                self.nodes_seen += 1
                if node.op_type == "Constant" and node.zero_fill:
                    graph.zero_constants.update(o for o in node.outputs if o)
                if self.nodes_seen <= MAX_NODES:
                    graph.nodes.append(node)
                elif self.nodes_seen == MAX_NODES + 1:
                    self.ctx.incomplete(
                        f"ONNX model has more than {MAX_NODES} nodes: the rest were checked for custom "
                        "domains and external data, but not kept for the backdoor analysis"
                    )
            elif g.number == 2:
                graph.name = self._text(g)
            elif g.number == 5:
                tensor = self.walk_tensor(g)
                graph.initializers.add(tensor.name)
                if tensor.zero_fill:
                    graph.zero_constants.add(tensor.name)
            elif g.number == 15:
                self.walk_sparse_tensor(g)
            elif g.number in (11, 12):
                name, static = self.walk_value_info(g)
                (graph.inputs if g.number == 11 else graph.outputs).append(name)
                if static and g.number == 11:
                    graph.static_inputs.add(name)
        return graph

    def walk_value_info(self, f: Field) -> tuple[str, bool]:
        """ValueInfoProto: the name, and whether every dimension of its tensor type is a fixed number.

        A runtime rejects an input whose shape differs from fixed declared dims (onnxruntime: "Got invalid
        dimensions"), so Shape/Size of such an input is a constant, not something a caller controls.
        """
        name, static = "", False
        for g in self.r.fields(f.offset, f.end):
            if g.number == 1 and g.wire_type == LEN:
                name = self._text(g)
            elif g.number == 2 and g.wire_type == LEN:  # TypeProto
                for t in self.r.fields(g.offset, g.end):
                    if t.number == 1 and t.wire_type == LEN:  # tensor_type
                        static = self._static_shape(t)
        return name, static

    def _static_shape(self, f: Field) -> bool:
        """TypeProto.Tensor: a shape (field 2) is present and each Dimension has dim_value, no dim_param."""
        has_shape = False
        for g in self.r.fields(f.offset, f.end):
            if g.number != 2 or g.wire_type != LEN:
                continue
            has_shape = True
            for d in self.r.fields(g.offset, g.end):  # TensorShapeProto.dim
                if d.number != 1 or d.wire_type != LEN:
                    continue
                kinds = {h.number for h in self.r.fields(d.offset, d.end)}
                if 1 not in kinds or 2 in kinds:  # dim_value, dim_param
                    return False
        return has_shape

    def walk_node(self, f: Field, *, depth: int) -> Node:
        node = Node(offset=f.offset)
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.wire_type != LEN:
                continue
            if g.number == 1:
                node.inputs.append(self._text(g))
            elif g.number == 2:
                node.outputs.append(self._text(g))
            elif g.number == 3:
                node.name = self._text(g)
            elif g.number == 4:
                node.op_type = self._text(g)
            elif g.number == 7:
                node.domain = self._text(g)
            elif g.number == 5:
                node.zero_fill = self.walk_attribute(g, depth=depth) or node.zero_fill
        if node.domain not in STANDARD_DOMAINS:
            self.facts.custom_ops.setdefault((node.domain, node.op_type), node.offset)
        return node

    def walk_attribute(self, f: Field, *, depth: int) -> bool:
        """Attributes may hold tensors (external data) and subgraphs (If/Loop/Scan bodies).

        Returns whether the attribute is a single zero (`value` tensor, `value_float`, `value_int`), which
        is what a Constant node producing a zero fill carries.
        """
        name, zero = "", False
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.number == 1 and g.wire_type == LEN:
                name = self._text(g)
            elif g.number in (2, 3) and g.wire_type in (I32, VARINT):  # f, i
                zero = g.value == 0
            if g.wire_type != LEN:
                continue
            if g.number == 5:  # t
                zero = self.walk_tensor(g).zero_fill
            elif g.number == 10:  # tensors
                self.walk_tensor(g)
            elif g.number in (22, 23):  # sparse_tensor, sparse_tensors
                self.walk_sparse_tensor(g)
            elif g.number in (6, 11):  # g, graphs
                self.walk_graph(g, depth=depth + 1)
        return zero and name in ("value", "value_float", "value_int")

    def walk_sparse_tensor(self, f: Field) -> None:
        for g in self.r.fields(f.offset, f.end):
            if g.number in (1, 2) and g.wire_type == LEN:
                self.walk_tensor(g)

    def walk_tensor(self, f: Field) -> _Tensor:
        """TensorProto: name, and where its bytes live. Payloads are skipped by seeking, never read,
        except a single-element tensor's few bytes, to tell a zero fill (see `_switch_kind`)."""
        name = ""
        external = False
        entries: list[tuple[str, str]] = []
        elements = 1
        payloads = 0
        zero = True
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.number == 8 and g.wire_type == LEN:
                name = self._text(g)
            elif g.number == 14 and g.wire_type == VARINT:
                external = g.value == 1
            elif g.number == 13 and g.wire_type == LEN:
                entries.append(self._string_entry(g))
            elif g.number == 1:  # dims (packed or not)
                if g.wire_type == LEN and g.value > MAX_SMALL_CONSTANT_BYTES:
                    elements = 0  # many dims: not a single element (and not read)
                    continue
                dims = [g.value] if g.wire_type != LEN else self.r.packed_varints(g, MAX_SMALL_CONSTANT_BYTES)
                for d in dims:
                    elements *= d
            elif g.number in _NUMERIC_PAYLOADS:
                payloads += 1
                if g.wire_type == LEN:
                    small = g.value <= MAX_SMALL_CONSTANT_BYTES
                    zero = zero and small and not any(self.r.read(g.offset, g.value))
                else:
                    zero = zero and g.value == 0
            elif g.number == 6:  # string_data
                zero = False
        if external or entries:
            self.check_external(name, entries, f.offset)
        return _Tensor(name, zero_fill=zero and payloads > 0 and elements == 1 and not (external or entries))

    # -- checks ----------------------------------------------------------------------------------
    def check_external(self, tensor: str, entries: list[tuple[str, str]], offset: int) -> None:
        info = dict(entries)
        location = info.get("location")
        if location is None:
            self.ctx.add(
                RuleId.MALFORMED,
                Severity.HIGH,
                f"tensor {tensor!r} stores its data externally but names no location",
                offset=offset,
                tensor=tensor,
            )
            return
        if len(self.facts.external_locations) < 100:
            self.facts.external_locations.append(location)
        problem, severity = external_location_problem(location)
        if not problem:
            self.ctx.reference_data(location)
        if problem:
            self.ctx.add(
                RuleId.ARCHIVE_UNSAFE,
                severity,
                f"tensor {tensor!r} reads external data from {location!r}: {problem}",
                offset=offset,
                tensor=tensor,
                location=location,
            )
        for key in ("offset", "length"):
            raw = info.get(key)
            if raw is None:
                continue
            try:
                value = int(raw.strip(), 10)
            except ValueError:
                self.ctx.add(
                    RuleId.MALFORMED,
                    Severity.HIGH,
                    f"tensor {tensor!r} external data {key} {raw!r} is not an integer",
                    offset=offset,
                )
                continue
            if value < 0 or value > self.ctx.limits.max_file_bytes:
                self.ctx.add(
                    RuleId.ARCHIVE_UNSAFE,
                    Severity.HIGH,
                    f"tensor {tensor!r} external data {key} {value} is beyond sane bounds "
                    f"(0..{self.ctx.limits.max_file_bytes})",
                    offset=offset,
                    tensor=tensor,
                )

    def report(self) -> None:
        for (domain, op), offset in sorted(self.facts.custom_ops.items()):
            if (domain, op) in self.facts.local_functions:
                continue  # a model-local function: its body's nodes were checked instead
            python = domain in PYTHON_OP_DOMAINS
            self.ctx.add(
                RuleId.CODE_EXEC if python else RuleId.CODE_UNKNOWN,
                Severity.CRITICAL if python else Severity.HIGH,
                f"operator {op!r} from custom domain {domain!r}: "
                + (
                    "onnxruntime-extensions runs custom Python ops from this domain"
                    if python
                    else "runs native code from a library the loader must register"
                ),
                offset=offset,
                domain=domain,
                op_type=op,
            )
        for graph in self.main_graphs:
            for finding in find_trigger_switches(graph, self.ctx):
                self.ctx.add(
                    RuleId.BACKDOOR, Severity.HIGH, finding.message, offset=finding.offset, **finding.detail
                )
        self.ctx.set_metadata(
            "onnx",
            {
                "ir_version": self.facts.ir_version,
                "opsets": dict(sorted(self.facts.opsets.items())),
                "external_data": self.facts.external_locations[:20],
            },
        )


def external_location_problem(location: str) -> tuple[str, Severity]:
    """Why an external-data location escapes the model directory ('' when it does not)."""
    if location == ORT_MEMORY_LOCATION or "_ORT_MEM_ADDR_" in location:
        return "onnxruntime reads raw process memory at the given offset for this location", Severity.CRITICAL
    if "\x00" in location:
        return "contains a NUL byte (truncates the path differently per runtime)", Severity.HIGH
    if location.startswith(("/", "\\")) or _DRIVE.match(location):
        return "absolute path outside the model directory", Severity.CRITICAL
    parts = re.split(r"[\\/]+", location)
    if ".." in parts:
        return "path traversal ('..') out of the model directory", Severity.CRITICAL
    if "\\" in location:
        return "backslash in the path (a directory separator on Windows only)", Severity.HIGH
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", location):
        return "URL-like location (a scheme is not a file in the model directory)", Severity.HIGH
    if location.startswith("~"):
        return "home-directory path", Severity.HIGH
    return "", Severity.INFO


# -- architectural backdoor heuristics -------------------------------------------------------------------
@dataclass(frozen=True)
class _Suspicion:
    message: str
    offset: int
    detail: dict[str, object]


def find_trigger_switches(graph: Graph, ctx: ScanContext) -> Iterable[_Suspicion]:
    """Where the model's output is switched by comparing its input with constants (see module doc).

    1. constant tensors: initializers, and outputs of nodes whose inputs are all constant (Constant has none);
    2. input-derived tensors: graph inputs, and outputs of any node with an input-derived input;
    3. triggers: comparisons of an input-derived tensor with a constant, carried through boolean logic,
       casts, reductions, reshapes and arithmetic with constants;
    4. a *switch*: Where/If/Loop controlled by a trigger, or arithmetic mixing a trigger into real
       (input-derived, non-trigger) data;
    5. suspicious when the switch's output reaches a graph output within MAX_BACKDOOR_HOPS nodes, with a
       real data path into it (so thresholding a score into a label is not reported).
    """
    graph_inputs = {name for name in graph.inputs if name and name not in graph.initializers}
    constant: set[str] = set(graph.initializers)
    derived: set[str] = set(graph_inputs)
    zero: set[str] = set(graph.zero_constants)
    trigger: set[str] = set()
    compared: dict[str, set[str]] = {}  # trigger tensor -> input-derived tensors it compares
    switches: list[tuple[Node, str]] = []
    seen_switch: set[int] = set()

    changed, passes = True, 0
    while changed and passes < 8:  # nodes should be topologically sorted; tolerate a few out of order
        changed, passes = False, passes + 1
        ctx.check()
        for index, node in enumerate(graph.nodes):
            ins = [i for i in node.inputs if i]
            if node.op_type in SHAPE_OPS and len(ins) == 1 and ins[0] in graph.static_inputs:
                # the shape of an input with fixed declared dims is fixed: the caller cannot vary it
                for out in node.outputs:
                    if out and out not in constant:
                        constant.add(out)
                        changed = True
                continue
            if node.op_type in ZERO_PRESERVING and ins and ins[0] in zero and all(i in constant for i in ins):
                for out in node.outputs:
                    if out and out not in zero:
                        zero.add(out)
                        changed = True
            any_derived = any(i in derived for i in ins)
            if not any_derived and node.op_type not in RANDOM_OPS and all(i in constant for i in ins):
                for out in node.outputs:
                    if out and out not in constant:
                        constant.add(out)
                        changed = True
            if any_derived:
                for out in node.outputs:
                    if out and out not in derived:
                        derived.add(out)
                        changed = True
            new_trigger, kind = _trigger_output(node, ins, derived, constant, trigger)
            if new_trigger:
                sources = set().union(*(compared.get(i, set()) for i in ins))
                if node.op_type in COMPARISONS:
                    sources |= {i for i in ins if i in derived and i not in trigger}
                for out in node.outputs:
                    if out and out not in trigger:
                        trigger.add(out)
                        compared[out] = sources
                        changed = True
            if index not in seen_switch:
                kind = _switch_kind(node, ins, derived, constant, trigger, compared)
                if kind:
                    seen_switch.add(index)
                    switches.append((node, kind))

    if not switches:
        return []
    distance = _distance_to_outputs(graph)
    consumers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for i in node.inputs:
            if i:
                consumers.setdefault(i, []).append(node)
    outputs = {o for o in graph.outputs if o}
    found: list[_Suspicion] = []
    for node, kind in switches:
        hops = min((distance.get(o, 1 << 30) for o in node.outputs if o), default=1 << 30)
        if hops > MAX_BACKDOOR_HOPS:
            continue
        if _is_masked_reduction(node, zero, consumers, outputs):
            continue
        label = node.name or node.op_type
        found.append(
            _Suspicion(
                f"possible architectural backdoor: {node.op_type} node {label!r} {kind}, and its result "
                f"reaches the model output {'directly' if hops == 0 else f'within {hops} node(s)'}",
                node.offset,
                {"node": node.name, "op_type": node.op_type, "hops_to_output": hops},
            )
        )
    return found


def _trigger_output(
    node: Node, ins: list[str], derived: set[str], constant: set[str], trigger: set[str]
) -> tuple[bool, str]:
    """Does this node produce a trigger (a function of input-vs-constant comparisons only)?"""
    if node.op_type in COMPARISONS and len(ins) == 2:
        a, b = ins
        input_vs_const = (a in derived and a not in trigger and b in constant) or (
            b in derived and b not in trigger and a in constant
        )
        if input_vs_const or (a in trigger and b in constant) or (b in trigger and a in constant):
            return True, "comparison"
    if node.op_type in TRIGGER_PRESERVING and any(i in trigger for i in ins):
        if all(i in trigger or i in constant for i in ins):
            return True, "carried"
    return False, ""


def _switch_kind(
    node: Node,
    ins: list[str],
    derived: set[str],
    constant: set[str],
    trigger: set[str],
    compared: dict[str, set[str]],
) -> str:
    """Describe how `node` lets a trigger override real data ('' if it does not)."""
    op = node.op_type
    real = [i for i in ins if i in derived and i not in trigger]
    if op == "Where" and len(node.inputs) >= 3 and node.inputs[0] in trigger:
        x, y = node.inputs[1], node.inputs[2]
        branches_real = [b for b in (x, y) if b in derived and b not in trigger]
        branches_fixed = [b for b in (x, y) if b in constant or b in trigger]
        if branches_real and branches_fixed:
            # x > 0 ? x : 0 is an activation, not a trigger: skip when the real branch is what was compared.
            if set(branches_real) & compared.get(node.inputs[0], set()):
                return ""
            return "selects a fixed value instead of the computed one when the input matches a constant"
        return ""
    if op == "If" and node.inputs and node.inputs[0] in trigger:
        return "switches between subgraphs on a comparison of the input with a constant"
    if op == "Loop" and any(i in trigger for i in node.inputs[:2] if i):
        return "runs a loop controlled by a comparison of the input with a constant"
    if op in ARITHMETIC_MIXERS and real and any(i in trigger for i in ins):
        if set(real) & set().union(*(compared.get(i, set()) for i in ins if i in trigger)):
            return ""
        return "blends a comparison of the input with a constant into the computed values"
    return ""


def _is_masked_reduction(
    node: Node, zero: set[str], consumers: dict[str, list[Node]], outputs: set[str]
) -> bool:
    """`Where(mask, 0, x)` whose result is only ever summed: the mask drops elements from an aggregate.

    This is how a loss honours `ignore_index` and a pooled mean skips padding. A single zero cannot encode
    a chosen output, and a sum-type reduction (where zero is neutral) stands between the switch and every
    graph output, so the trigger can only remove terms, never substitute the result. Every path from the
    switch is followed through ops that keep zeros zero; one that reaches a graph output, or any other op,
    first, means the fill may show in the output, and the switch is reported as before.
    """
    if node.op_type != "Where" or len(node.inputs) < 3 or not (set(node.inputs[1:3]) & zero):
        return False
    frontier = [o for o in node.outputs if o]
    seen: set[str] = set()
    for _ in range(4 * MAX_BACKDOOR_HOPS + 4):
        next_frontier: list[str] = []
        for tensor in frontier:
            if tensor in seen:
                continue
            seen.add(tensor)
            if tensor in outputs or not consumers.get(tensor):
                return False  # the fill reaches an output (or is itself one) before any reduction
            for consumer in consumers[tensor]:
                if consumer.op_type in SUM_REDUCTIONS:
                    continue
                if consumer.op_type not in ZERO_PRESERVING:
                    return False
                next_frontier += [o for o in consumer.outputs if o]
        if not next_frontier:
            return True
        frontier = next_frontier
    return False


def _distance_to_outputs(graph: Graph) -> dict[str, int]:
    """For each tensor, the fewest nodes between it and a graph output (0 = it is an output)."""
    producers_of_inputs: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for out in node.outputs:
            producers_of_inputs.setdefault(out, []).append(node)
    distance: dict[str, int] = {}
    queue: deque[str] = deque()
    for name in graph.outputs:
        if name and name not in distance:
            distance[name] = 0
            queue.append(name)
    while queue:
        tensor = queue.popleft()
        d = distance[tensor]
        if d >= MAX_BACKDOOR_HOPS:
            continue
        for producer in producers_of_inputs.get(tensor, []):
            for i in producer.inputs:
                if i and i not in distance:
                    distance[i] = d + 1
                    queue.append(i)
    return distance
