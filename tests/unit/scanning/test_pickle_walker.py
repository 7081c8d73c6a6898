"""The opcode walker and pickle scanner on hand-built pickles: every way to import, call and hide."""

from __future__ import annotations

import copyreg
import io
import pickle
import re
import time

import pytest
from modelshield.models import Format, RuleId, Severity
from modelshield.scanning import pickles
from modelshield.scanning.pickles import PickleWalker, looks_like_pickle, opcodes
from modelshield.scanning.registry import Limits, ScanContext

from tests.corpus import pickle_family as corpus
from tests.corpus.pickle_family import globals_flagged, rules_of, scan_bytes

# (sample, the global that must be flagged as MS-CODE-EXEC, how it is called)
CODE_EXEC_SAMPLES = [
    ("GLOBAL + REDUCE", corpus.global_os_system, "os.system", "REDUCE"),
    ("STACK_GLOBAL via memo", corpus.stack_global_via_memo, "os.system", "REDUCE"),
    ("STACK_GLOBAL via BINPUT/LONG_BINGET", corpus.stack_global_via_binput, "subprocess.getoutput", "REDUCE"),
    ("MEMOIZE numbering after a scattered BINPUT", corpus.memoize_numbering_trick, "os.system", "REDUCE"),
    ("INST", corpus.inst_opcode, "os.system", "INST"),
    ("OBJ", corpus.obj_opcode, "os.system", "OBJ"),
    ("NEWOBJ", corpus.newobj_opcode, "subprocess.Popen", "NEWOBJ"),
    ("NEWOBJ_EX", corpus.newobj_ex_opcode, "subprocess.Popen", "NEWOBJ_EX"),
    ("BUILD reaching __setstate__", corpus.build_setstate, "subprocess.Popen", "BUILD"),
    ("after a benign STOP", corpus.evil_after_benign_stop, "os.system", "REDUCE"),
    ("INT that pickletools rejects", corpus.int_fools_pickletools, "os.system", "REDUCE"),
    (
        "dunder attribute traversal",
        corpus.dunder_traversal,
        "collections.OrderedDict.__init__.__globals__",
        "",
    ),
    ("__builtin__ alias", corpus.alias_builtin_eval, "builtins.eval", "REDUCE"),
    ("commands alias", corpus.alias_commands, "subprocess.getoutput", "REDUCE"),
    ("whitespace in names", corpus.whitespace_module, "os.system", "REDUCE"),
    ("FRAME with a lying length", corpus.lying_frame, "os.system", "REDUCE"),
    ("getattr chain", corpus.getattr_chain, "builtins.getattr", "REDUCE"),
]


@pytest.mark.parametrize(
    ("label", "make", "name", "caller"), CODE_EXEC_SAMPLES, ids=[s[0] for s in CODE_EXEC_SAMPLES]
)
def test_every_import_technique_is_flagged_as_code_exec(label, make, name, caller) -> None:
    # Given a pickle that imports a denied callable this way
    # When it is scanned
    report = scan_bytes(make(), "evil.pkl")
    # Then the import is a critical MS-CODE-EXEC finding naming the global, its location and its caller
    assert report.format == Format.PICKLE
    exec_findings = [
        f for f in report.findings if f.rule == RuleId.CODE_EXEC and f.detail.get("global") == name
    ]
    assert exec_findings, report.findings
    finding = exec_findings[0]
    assert finding.severity == Severity.CRITICAL
    assert re.search(r"evil\.pkl@\d+$", finding.location)
    assert caller in finding.detail["called_by"]


@pytest.mark.parametrize(
    ("module", "name"), corpus.DENIED_CALLS, ids=[f"{m}.{n}" for m, n in corpus.DENIED_CALLS]
)
def test_denylist_sweep(module: str, name: str) -> None:
    # Given a protocol 4 pickle calling module.name; When scanned; Then it is MS-CODE-EXEC
    report = scan_bytes(corpus.denied_call(module, name))
    assert f"{module}.{name}" in globals_flagged(report), report.findings


def test_code_exec_finding_shows_the_decompiled_payload() -> None:
    # Given a flagged pickle; When scanned; Then fickling's static decompilation is attached
    report = scan_bytes(corpus.global_os_system())
    finding = next(f for f in report.findings if f.rule == RuleId.CODE_EXEC)
    assert "system('echo pwned')" in finding.detail["decompiled"]


def test_unknown_global_is_code_unknown_not_exec() -> None:
    report = scan_bytes(corpus.unknown_global())
    assert rules_of(report) == {RuleId.CODE_UNKNOWN}
    finding = report.findings[0]
    assert finding.severity == Severity.HIGH
    assert "unknown code: mypackage.evil.run" in finding.message


def test_unregistered_extension_code_is_unknown_and_a_registered_one_is_resolved() -> None:
    # Given an EXT1 opcode for code 0xF0
    data = corpus.ext_opcode(0xF0)
    # When nothing is registered for it, Then it is an unknown import (the loader's registry decides)
    assert RuleId.CODE_UNKNOWN in rules_of(scan_bytes(data))
    # When the scanning process has os.system registered under that code, Then it resolves and is denied
    copyreg.add_extension("os", "system", 0xF0)
    try:
        assert "os.system" in globals_flagged(scan_bytes(data))
    finally:
        copyreg.remove_extension("os", "system", 0xF0)


def test_build_on_an_imported_class_itself_is_monkey_patching() -> None:
    report = scan_bytes(corpus.build_on_global())
    finding = next(f for f in report.findings if f.rule == RuleId.CODE_EXEC)
    assert "monkey-patching" in finding.message
    assert finding.detail["global"] == "collections.OrderedDict"


def test_two_pickles_in_one_stream_are_both_scanned() -> None:
    # Given two malicious pickles back to back
    report = scan_bytes(corpus.two_evil_pickles())
    # Then both imports are flagged and the second pickle is itself a finding
    assert {"subprocess.check_output", "os.system"} <= globals_flagged(report)
    assert any(f.rule == RuleId.MALFORMED and "another pickle" in f.message for f in report.findings)


def test_garbage_after_stop_is_malformed() -> None:
    report = scan_bytes(corpus.garbage_after_stop())
    assert rules_of(report) == {RuleId.MALFORMED}
    assert "after STOP" in report.findings[0].message


@pytest.mark.parametrize(
    "make", [corpus.unresolvable_stack_global, corpus.long_string_stack_global], ids=["computed", "too long"]
)
def test_unresolvable_stack_global_is_malformed_and_unknown(make) -> None:
    # Given a STACK_GLOBAL whose module/name cannot be traced to literal strings
    report = scan_bytes(make())
    # Then it fails closed: MS-MALFORMED plus MS-CODE-UNKNOWN ("dynamic import")
    assert {RuleId.MALFORMED, RuleId.CODE_UNKNOWN} <= rules_of(report)
    assert any("dynamic import" in f.message for f in report.findings if f.rule == RuleId.CODE_UNKNOWN)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (corpus.truncated_pickle, "without STOP"),
        (corpus.stack_underflow, "stack underflow"),
        (corpus.frame_beyond_end, "FRAME declares"),
        (corpus.out_of_band_buffer, "out-of-band"),
        (corpus.lying_frame, None),
    ],
    ids=["truncated", "underflow", "frame beyond end", "out-of-band buffer", "lying frame"],
)
def test_structural_problems_are_malformed(make, fragment) -> None:
    report = scan_bytes(make())
    malformed = [f for f in report.findings if f.rule == RuleId.MALFORMED]
    if fragment is None:  # a short lying frame is invisible to the C loader: only the payload matters
        assert RuleId.CODE_EXEC in rules_of(report)
    else:
        assert any(fragment in f.message for f in malformed), report.findings


def test_truncated_pickle_still_reports_the_import_it_reached() -> None:
    report = scan_bytes(corpus.truncated_pickle())
    assert "os.system" in globals_flagged(report)


@pytest.mark.parametrize("bad", [b"\xff", b"!", b"!!! just text after the payload\n"])
def test_payload_followed_by_an_invalid_byte_is_still_a_pickle(bad: bytes) -> None:
    # Given a protocol-0 payload (it runs in pickle.load) followed by a byte that stops the loader,
    # even a printable one that would let the file pass for text
    data = corpus.global_os_system()[:-1] + bad
    report = scan_bytes(data)
    # Then it is claimed as a pickle: the payload is flagged and the invalid byte is malformed
    assert report.format == Format.PICKLE
    assert "os.system" in globals_flagged(report)
    assert RuleId.MALFORMED in rules_of(report)


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_is_clean_for_every_protocol(protocol: int) -> None:
    data = corpus.plain_data_pickles()[f"protocol{protocol}"]
    report = scan_bytes(data)
    assert report.format == Format.PICKLE
    assert not rules_of(report) & corpus.PROBLEM_RULES, report.findings


def _walk(data: bytes, limits: Limits | None = None) -> tuple[pickles.WalkResult, ScanContext]:
    ctx = ScanContext(limits=limits or Limits(), location="x")
    ctx.shared.deadline = time.monotonic() + 30
    return PickleWalker(io.BytesIO(data), ctx).walk(0, len(data)), ctx


def test_a_benign_pickle_past_the_memo_limit_stays_clean() -> None:
    # Given more distinct memoized strings than Limits.max_pickle_memo (as a big real pickle has)
    data = pickle.dumps([f"s{i}" for i in range(50)], protocol=4)
    limits = Limits(max_pickle_memo=10)
    walk, _ = _walk(data, limits)
    # Then the walk completes, the scan has no problem findings, and the untracked region is noted
    assert walk.stopped
    report = scan_bytes(data, limits=limits)
    assert not rules_of(report) & corpus.PROBLEM_RULES, report.findings
    assert "pickle_memo_untracked_from_offset" in report.metadata


def test_an_import_built_from_memo_entries_past_the_limit_is_still_blocked() -> None:
    # Given a pickle that fills the memo, then memoizes "os" and "system" beyond the limit and
    # fetches them back for STACK_GLOBAL (hiding the import from a walker that stopped tracking)
    filler = b"".join(b"\x8c\x03" + f"f{i:02d}".encode() + b"\x94" + b"0" for i in range(20))
    data = (
        b"\x80\x04"
        + filler
        + b"\x8c\x02os\x94"
        + b"0"
        + b"\x8c\x06system\x94"
        + b"0"
        + b"h\x14"
        + b"h\x15"
        + b"\x93"  # BINGET 20, BINGET 21, STACK_GLOBAL
        + b"\x8c\x04echo\x85R."  # ("echo",) REDUCE STOP
    )
    # When it is scanned with a memo limit below those entries
    report = scan_bytes(data, limits=Limits(max_pickle_memo=10))
    # Then the import cannot pass as clean: it is unresolvable, which blocks
    assert rules_of(report) & {RuleId.CODE_EXEC, RuleId.CODE_UNKNOWN}, report.findings


def test_stack_limit_stops_the_walk_with_scan_incomplete() -> None:
    # Given a stack deeper than the limit, spanning more than one read chunk
    n = pickles.CHUNK + 10
    data = b"\x80\x04" + b"N" * n + b"."
    walk, _ = _walk(data, Limits(max_pickle_stack=1000))
    # Then the walk stops on the limit (reported as incomplete by the caller, not as malformed)
    assert walk.aborted and "deeper than 1000" in (walk.error or "")
    report = scan_bytes(data, limits=Limits(max_pickle_stack=1000))
    assert RuleId.MALFORMED not in rules_of(report)


def test_long_payloads_are_skipped_by_seeking_not_read() -> None:
    # Given a pickle whose bulk is one 8 MiB bytes payload
    data = pickle.dumps({"blob": b"\x00" * (8 << 20), "after": "tail"}, protocol=4)

    class CountingReader(io.BytesIO):
        read_bytes = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            CountingReader.read_bytes += len(out)
            return out

    ctx = ScanContext(limits=Limits(), location="x")
    ctx.shared.deadline = time.monotonic() + 30
    walk = PickleWalker(CountingReader(data), ctx).walk(0, len(data))
    # Then the walk ends at STOP having read about one chunk, not the 8 MiB
    assert walk.stopped and walk.end == len(data)
    assert CountingReader.read_bytes < 2 * pickles.CHUNK + 1024


def test_fast_tuple_path_matches_the_slow_path() -> None:
    # Given a dense pickle of tuples (the fast path's case) with a payload at the very end
    rows = [(i, f"s{i % 7}", i * 0.5, i % 2 == 0, None) for i in range(3000)]
    data = pickle.dumps(rows, protocol=4)[:-1] + b"0" + corpus.call_global_p4("os", "system")[2:]
    fast, _ = _walk(data)
    saved = opcodes.FAST_TUPLE
    opcodes.FAST_TUPLE = re.compile(rb"(?!)")  # never matches: every opcode through the loop
    try:
        slow, _ = _walk(data)
    finally:
        opcodes.FAST_TUPLE = saved
    # Then both paths stop at the same place with the same imports
    assert fast.stopped and slow.stopped
    assert fast.end == slow.end == len(data)
    assert set(fast.imports) == set(slow.imports) == {"os.system"}


def test_fast_tuple_is_decodable_when_a_hook_needs_it() -> None:
    data = pickle.dumps((1, 2, 3, 4, 5), protocol=4)
    walk, _ = _walk(data)
    assert pickles.as_tuple(walk.value) == (1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (pickle.dumps({"a": 1}, protocol=0), True),
        (pickle.dumps([1, 2, 3], protocol=1), True),
        (pickle.dumps(None, protocol=4), True),
        (b"\x80\x09N.", False),
        (b"cat\ndog\nthis is a readme\n", False),
        (b"Notes about the model\n", False),
        (b'{"json": true}', False),
        (b"", False),
    ],
    ids=["p0", "p1", "p4", "bad protocol", "text with newlines", "text", "json", "empty"],
)
def test_sniffer(head: bytes, expected: bool) -> None:
    assert looks_like_pickle(head) is expected


def test_exponentially_shared_structure_does_not_hang() -> None:
    # Given a tuple doubled 80 times with DUP/TUPLE2 (2**80 leaves if expanded) used as a dict key
    body = b"\x80\x04}" + b"N" + b"2\x86" * 80 + b"Ns."
    started = time.monotonic()
    report = scan_bytes(body)
    # Then the scan finishes at once and is clean (it is only data)
    assert time.monotonic() - started < 2
    assert not rules_of(report) & corpus.PROBLEM_RULES, report.findings


def test_short_reads_from_the_stream_do_not_stall_the_walk() -> None:
    class Trickle(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            return super().read(min(n, 7) if n is not None and n >= 0 else 7)

    data = pickle.dumps([f"x{i}" for i in range(5000)], protocol=4) + corpus.global_os_system()
    ctx = ScanContext(limits=Limits(), location="x")
    ctx.shared.deadline = time.monotonic() + 30
    walk = PickleWalker(Trickle(data), ctx).walk(0, len(data))
    assert walk.stopped and walk.end < len(data)
