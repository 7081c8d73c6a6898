"""TensorFlow SavedModel scanner (`saved_model.pb`): graph ops that run Python or touch files.

A SavedModel is a graph, not code, but some TensorFlow ops reach outside it when the graph runs:
- `PyFunc`, `PyFuncStateless`, `EagerPyFunc` call Python functions -> MS-CODE-EXEC;
- `ReadFile`, `WriteFile`, `MatchingFiles`, `ImmutableConst` (maps a file), file writers/readers and
  dataset savers, and `PrintV2` to a `file://` stream read or write arbitrary files -> MS-CODE-EXEC;
- checkpoint and lookup-table ops (`SaveV2`, `RestoreV2`, `MergeV2Checkpoints`, `InitializeTableFromTextFile`,
  file-based datasets ...) are normal in every SavedModel, where their path comes from a placeholder or a
  function argument that the loader feeds with the model's own `variables/` or `assets/` path. The same op
  with a path built only from constants reads or writes a fixed location -> MS-CODE-EXEC.
Asset files whose names escape `assets/` -> MS-ARCHIVE-UNSAFE.

The proto is read at wire level (see protobuf.py): the main graph and every function in the library.
Not covered: custom ops loaded from shared libraries (any op name we do not know might be one; loading
such a model fails unless the user loads the library first) and Keras metadata (`keras_metadata.pb`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.protobuf import LEN, VARINT, Field, ProtoReader, WireError
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.streams import path_problem

PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
FILE_OPS = frozenset(
    {
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "ImmutableConst",
        "WholeFileReader",
        "WholeFileReaderV2",
        "CreateSummaryFileWriter",
        "CreateSummaryDbWriter",
        "SqlDataset",
        "ExperimentalSqlDataset",
        "SaveDataset",
        "SaveDatasetV2",
        "LoadDataset",
        "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord",
        "DebugIdentityV2",
        "DebugIdentityV3",
        "DumpSnapshot",
        "SnapshotDatasetV2",
    }
)
# Op -> indices of its inputs that are file paths. Fine when fed (placeholder/argument), not when constant.
PATH_OPS: dict[str, tuple[int, ...]] = {
    "Save": (0,),
    "SaveV2": (0,),
    "SaveSlices": (0,),
    "Restore": (0,),
    "RestoreV2": (0,),
    "RestoreSlice": (0,),
    "MergeV2Checkpoints": (0, 1),
    "InitializeTableFromTextFile": (1,),
    "InitializeTableFromTextFileV2": (1,),
    "TextLineDataset": (0,),
    "TFRecordDataset": (0,),
    "TFRecordDatasetV2": (0,),
    "FixedLengthRecordDataset": (0,),
    "FixedLengthRecordDatasetV2": (0,),
    "ExperimentalCSVDataset": (0,),
    "CSVDataset": (0,),
    "CSVDatasetV2": (0,),
    "LMDBDataset": (0,),
}
SOURCE_OPS_CONSTANT = frozenset({"Const", "HostConst"})
MAX_NAME = 64 * 1024
MAX_ANCESTORS = 10_000
MAX_NODES = 500_000


@dataclass
class TFNode:
    name: str = ""
    op: str = ""
    inputs: list[str] = field(default_factory=list)
    string_attrs: dict[str, bytes] = field(default_factory=dict)
    offset: int = 0


@dataclass
class TFGraph:
    where: str  # "graph" or "function <name>"
    nodes: dict[str, TFNode] = field(default_factory=dict)
    args: set[str] = field(default_factory=set)  # function arguments: fed at call time


def sniff_savedmodel(head: bytes, stream: BinaryIO) -> bool:
    """Top level holds only fields 1 (schema version) and 2 (MetaGraphDef); the latter parses as one."""
    if not head or head[0] not in (0x08, 0x12):
        return False
    reader = ProtoReader(stream)
    graphs = 0
    try:
        for f in reader.fields():
            if f.number == 1 and f.wire_type == VARINT and f.value <= 16:
                continue
            if f.number != 2 or f.wire_type != LEN:
                return False
            graphs += 1
            if graphs == 1:
                first = next(iter(reader.fields(f.offset, f.end)), None)
                if first is None or not (1 <= first.number <= 7 and first.wire_type == LEN):
                    return False
            if graphs > 64:
                return False
    except WireError:
        return False
    return graphs > 0


@register(Format.TF_SAVEDMODEL, sniff=sniff_savedmodel, priority=70)
def scan_savedmodel(stream: BinaryIO, ctx: ScanContext) -> None:
    """Every meta graph's nodes and functions, judged op by op."""
    reader = ProtoReader(stream)
    scanner = _SavedModelScanner(reader, ctx)
    try:
        scanner.scan()
    except WireError as exc:
        ctx.add(
            RuleId.MALFORMED, Severity.HIGH, f"SavedModel protobuf does not parse: {exc}", offset=exc.offset
        )
        ctx.incomplete("SavedModel only partly scanned (protobuf parse error)", offset=exc.offset)


class _SavedModelScanner:
    def __init__(self, reader: ProtoReader, ctx: ScanContext) -> None:
        self.r = reader
        self.ctx = ctx
        self.reported: set[tuple[str, str, str]] = set()
        self.tags: list[str] = []
        self.nodes_seen = 0

    def _text(self, f: Field) -> str:
        if f.wire_type != LEN:
            raise WireError(f"field {f.number} should be a string", f.offset)
        if f.value > MAX_NAME:
            return "<oversized>"
        return self.r.text_of(f, MAX_NAME)

    def scan(self) -> None:
        for f in self.r.fields():
            self.ctx.tick()
            if f.number == 2 and f.wire_type == LEN:
                self.meta_graph(f)
        self.ctx.set_metadata("savedmodel", {"tags": self.tags[:20]})

    def meta_graph(self, f: Field) -> None:
        graphs: list[TFGraph] = []
        fed: set[str] = set()
        op_names: list[tuple[str, int]] = []
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.wire_type != LEN:
                continue
            if g.number == 1:  # MetaInfoDef: tags (4), stripped_op_list (2)
                for h in self.r.fields(g.offset, g.end):
                    if h.number == 4 and h.wire_type == LEN:
                        self.tags.append(self._text(h))
                    elif h.number == 2 and h.wire_type == LEN:
                        for op in self.r.fields(h.offset, h.end):
                            if op.number == 1 and op.wire_type == LEN:
                                op_names.extend(self._op_def_name(op))
            elif g.number == 2:  # GraphDef
                graphs.extend(self.graph_def(g))
            elif g.number == 3:  # SaverDef: the filename tensor is fed by the loader
                for h in self.r.fields(g.offset, g.end):
                    if h.number == 1 and h.wire_type == LEN:
                        fed.add(self._text(h).split(":")[0])
            elif g.number == 6:  # AssetFileDef: filename (2) relative to assets/
                for h in self.r.fields(g.offset, g.end):
                    if h.number == 2 and h.wire_type == LEN:
                        self.check_asset(self._text(h), h.offset)
        for graph in graphs:
            self.judge(graph, fed)
        for op, offset in op_names:
            if op in PYTHON_OPS or op in FILE_OPS:
                self.report(op, "<op list>", "meta graph op list", offset)

    def _op_def_name(self, f: Field) -> Iterator[tuple[str, int]]:
        for g in self.r.fields(f.offset, f.end):
            if g.number == 1 and g.wire_type == LEN:
                yield self._text(g), g.offset
                return

    def graph_def(self, f: Field) -> Iterator[TFGraph]:
        main = TFGraph("graph")
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.number == 1 and g.wire_type == LEN:
                self._keep(main, self.node_def(g))
            elif g.number == 2 and g.wire_type == LEN:  # FunctionDefLibrary
                for h in self.r.fields(g.offset, g.end):
                    if h.number == 1 and h.wire_type == LEN:
                        yield self.function_def(h)
        yield main

    def function_def(self, f: Field) -> TFGraph:
        graph = TFGraph("function")
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.wire_type != LEN:
                continue
            if g.number == 1:  # OpDef signature: name (1), input_arg (2) with names (1)
                for h in self.r.fields(g.offset, g.end):
                    if h.number == 1 and h.wire_type == LEN:
                        graph.where = f"function {self._text(h)!r}"
                    elif h.number == 2 and h.wire_type == LEN:
                        for a in self.r.fields(h.offset, h.end):
                            if a.number == 1 and a.wire_type == LEN:
                                graph.args.add(self._text(a))
            elif g.number == 3:
                self._keep(graph, self.node_def(g))
        return graph

    def node_def(self, f: Field) -> TFNode:
        node = TFNode(offset=f.offset)
        for g in self.r.fields(f.offset, f.end):
            self.ctx.tick()
            if g.wire_type != LEN:
                continue
            if g.number == 1:
                node.name = self._text(g)
            elif g.number == 2:
                node.op = self._text(g)
            elif g.number == 3:
                node.inputs.append(self._text(g))
            elif g.number == 5:  # attr map entry: key (1), AttrValue (2) whose s is field 2
                key, value = "", b""
                for h in self.r.fields(g.offset, g.end):
                    if h.number == 1 and h.wire_type == LEN:
                        key = self._text(h)
                    elif h.number == 2 and h.wire_type == LEN:
                        for a in self.r.fields(h.offset, h.end):
                            if a.number == 2 and a.wire_type == LEN and a.value <= MAX_NAME:
                                value = self.r.bytes_of(a, MAX_NAME)
                if key and value:
                    node.string_attrs[key] = value
        return node

    def _keep(self, graph: TFGraph, node: TFNode) -> None:
        """Judge every node; keep at most MAX_NODES for the path tracing (memory stays bounded)."""
        self.nodes_seen += 1
        if node.op in PYTHON_OPS or node.op in FILE_OPS:
            self.report(node.op, node.name, graph.where, node.offset)
        if self.nodes_seen <= MAX_NODES:
            graph.nodes[node.name] = node
        elif self.nodes_seen == MAX_NODES + 1:
            self.ctx.incomplete(
                f"SavedModel has more than {MAX_NODES} nodes; file paths of the rest not traced"
            )

    # -- judgement -------------------------------------------------------------------------------
    def judge(self, graph: TFGraph, fed: set[str]) -> None:
        for node in graph.nodes.values():
            self.ctx.tick()
            op = node.op
            if op in PYTHON_OPS:
                self.report(op, node.name, graph.where, node.offset, why="calls a Python function")
            elif op in FILE_OPS:
                self.report(op, node.name, graph.where, node.offset, why="reads or writes arbitrary files")
            elif op == "PrintV2" and node.string_attrs.get("output_stream", b"").startswith(b"file://"):
                self.report(op, node.name, graph.where, node.offset, why="prints into a file")
            elif op in PATH_OPS:
                for index in PATH_OPS[op]:
                    if index < len(node.inputs) and self._constant_only(graph, node.inputs[index], fed):
                        self.report(
                            op, node.name, graph.where, node.offset, why="uses a fixed, constant file path"
                        )
                        break

    def _constant_only(self, graph: TFGraph, tensor: str, fed: set[str]) -> bool:
        """True when every source feeding `tensor` is a constant (nothing the loader feeds)."""
        stack, seen = [tensor], set()
        while stack:
            ref = stack.pop().lstrip("^")
            name = ref.split(":", 1)[0]
            if name in seen:
                continue
            seen.add(name)
            if len(seen) > MAX_ANCESTORS:
                return False
            if name in fed or name in graph.args:
                return False
            node = graph.nodes.get(name)
            if node is None:
                return False  # produced outside this graph (an argument or captured input)
            data_inputs = [i for i in node.inputs if not i.startswith("^")]
            if not data_inputs:
                if node.op not in SOURCE_OPS_CONSTANT:
                    return False
                continue
            stack.extend(data_inputs)
        return True

    def report(self, op: str, node: str, where: str, offset: int, *, why: str = "") -> None:
        key = (op, node, where)
        if key in self.reported:
            return
        self.reported.add(key)
        why = why or ("calls a Python function" if op in PYTHON_OPS else "reads or writes arbitrary files")
        self.ctx.add(
            RuleId.CODE_EXEC,
            Severity.CRITICAL,
            f"SavedModel op {op} (node {node!r} in {where}) {why}",
            offset=offset,
            op=op,
            node=node,
        )

    def check_asset(self, name: str, offset: int) -> None:
        problem = path_problem(name)
        if problem:
            self.ctx.add(
                RuleId.ARCHIVE_UNSAFE,
                problem[1],
                f"SavedModel asset file {name!r} {problem[0]}",
                offset=offset,
            )
