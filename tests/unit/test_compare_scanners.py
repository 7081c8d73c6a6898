"""benchmarks/compare_scanners.py: how tool outputs become outcomes, how outcomes are tallied and reported,
that the large files it builds are what they claim, and that its measurements measure the tool.

Nothing here installs or runs an external scanner: tool outputs are written by hand in each tool's format
(read from the tools' own reporting code), and the measured processes are this interpreter.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import pickle
import pickletools
import struct
import sys
import time
import types
from pathlib import Path

import pytest

from benchmarks import compare_scanners as cs
from benchmarks.compare_scanners import Outcome, ToolOutput
from benchmarks.compare_scanners import fickling_tool as fickling
from benchmarks.compare_scanners import modelaudit_tool as modelaudit
from benchmarks.compare_scanners import modelscan_tool as modelscan
from benchmarks.compare_scanners import modelshield_tool as modelshield
from benchmarks.compare_scanners import picklescan_tool as picklescan


def output(tmp_path: Path, returncode: int, stdout: str = "", stderr: str = "") -> ToolOutput:
    return ToolOutput(returncode, stdout, stderr, tmp_path)


# -- adapters: tool output -> outcome -------------------------------------------------------------------
PICKLESCAN_SUMMARY = """----------- SCAN SUMMARY -----------
Scanned files: 1
Infected files: {infected}
Suspicious globals: {suspicious}
Dangerous globals: {dangerous}"""


def test_picklescan_dangerous_import_is_flagged_with_the_global(tmp_path: Path) -> None:
    # Given picklescan's report of a dangerous import (exit 1)
    text = "/m/evil.pkl: dangerous import 'os system' FOUND\n" + PICKLESCAN_SUMMARY.format(
        infected=1, suspicious=0, dangerous=1
    )
    # When classified
    verdict = picklescan.classify(output(tmp_path, 1, text))
    # Then it is flagged and names the import
    assert verdict.outcome is Outcome.FLAGGED
    assert "os system" in verdict.detail


def test_picklescan_parse_error_after_a_dangerous_import_still_counts_as_flagged(tmp_path: Path) -> None:
    # Given exit 2 (scan error) whose summary nevertheless counts a dangerous global
    text = PICKLESCAN_SUMMARY.format(infected=1, suspicious=0, dangerous=1)
    verdict = picklescan.classify(output(tmp_path, 2, text, "ERROR: parsing pickle in /m/x.pkl: bad"))
    # Then the user was shown the danger: flagged, with the exit code noted
    assert verdict.outcome is Outcome.FLAGGED
    assert "exit 2" in verdict.detail


def test_picklescan_unparseable_file_is_clean_because_its_exit_code_is_zero(tmp_path: Path) -> None:
    # Given a non-pickle file: picklescan warns but exits 0
    text = "WARNING: could not parse /m/x.onnx as pickle: x\n" + PICKLESCAN_SUMMARY.format(
        infected=0, suspicious=0, dangerous=0
    )
    verdict = picklescan.classify(output(tmp_path, 0, text))
    # Then a CI gate would pass it: clean (fail open), and the detail says why
    assert verdict.outcome is Outcome.CLEAN
    assert "not parsed" in verdict.detail


def test_picklescan_crash_without_findings_is_an_error(tmp_path: Path) -> None:
    verdict = picklescan.classify(output(tmp_path, 2, "", "Traceback ...\nValueError: boom"))
    assert verdict.outcome is Outcome.ERROR
    assert "boom" in verdict.detail


def write_json(tmp_path: Path, name: str, data: object) -> None:
    (tmp_path / name).write_text(json.dumps(data))


def test_modelscan_issue_in_report_is_flagged(tmp_path: Path) -> None:
    # Given modelscan's JSON report with one CRITICAL operator issue
    issue = {"module": "posix", "operator": "system", "severity": "CRITICAL", "scanner": "pickle"}
    write_json(tmp_path, modelscan.REPORT, {"summary": {"total_issues": 1}, "issues": [issue], "errors": []})
    # When classified
    verdict = modelscan.classify(output(tmp_path, 1))
    # Then flagged, naming severity, module and operator
    assert verdict.outcome is Outcome.FLAGGED
    assert verdict.detail == "CRITICAL posix.system"


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [(0, Outcome.CLEAN), (3, Outcome.UNSUPPORTED), (2, Outcome.ERROR), (4, Outcome.ERROR)],
)
def test_modelscan_exit_codes_without_issues(tmp_path: Path, returncode: int, expected: Outcome) -> None:
    # Given a report with no issues and modelscan's documented exit codes
    write_json(tmp_path, modelscan.REPORT, {"summary": {}, "issues": [], "errors": []})
    assert modelscan.classify(output(tmp_path, returncode)).outcome is expected


def test_modelscan_error_detail_comes_from_the_report(tmp_path: Path) -> None:
    errors = [{"category": "DEPENDENCY", "description": "h5py is not installed"}]
    write_json(tmp_path, modelscan.REPORT, {"summary": {}, "issues": [], "errors": errors})
    verdict = modelscan.classify(output(tmp_path, 2))
    assert verdict.outcome is Outcome.ERROR
    assert "DEPENDENCY: h5py is not installed" in verdict.detail


def test_modelscan_exit_3_with_a_parse_error_is_an_error_not_unsupported(tmp_path: Path) -> None:
    # Given modelscan giving up on a .joblib it should cover: exit 3, but a pickle parse error recorded
    errors = [{"category": "PICKLE_GENOPS", "description": "Parsing error: opcode b'\\n' unknown"}]
    write_json(tmp_path, modelscan.REPORT, {"summary": {}, "issues": [], "errors": errors})
    verdict = modelscan.classify(output(tmp_path, 3))
    # Then it is an error (it tried and failed), not a format it declined
    assert verdict.outcome is Outcome.ERROR
    assert "PICKLE_GENOPS" in verdict.detail


def test_fickling_reads_the_first_unsafe_of_its_stacked_json_reports(tmp_path: Path) -> None:
    # Given fickling's report file: one JSON object per stacked pickle, appended
    safe = {"severity": "LIKELY_SAFE", "analysis": "nothing"}
    bad = {"severity": "OVERTLY_MALICIOUS", "analysis": "Call to `system('echo pwned')`\nmore"}
    (tmp_path / fickling.REPORT).write_text(json.dumps(safe, indent=4) + json.dumps(bad, indent=4))
    # When classified with exit 1
    verdict = fickling.classify(output(tmp_path, 1))
    # Then flagged with the unsafe pickle's severity and first analysis line
    assert verdict.outcome is Outcome.FLAGGED
    assert verdict.detail == "OVERTLY_MALICIOUS: Call to `system('echo pwned')`"


TRACEBACK = """Traceback (most recent call last):
  File "fickle.py", line 391, in run
    raise NotImplementedError(f"TODO: Add support for Pickle opcode {self.info.name}")
NotImplementedError: TODO: Add support for Pickle opcode PERSID
"""


def test_fickling_crash_with_exit_1_is_an_error_not_a_detection(tmp_path: Path) -> None:
    # Given fickling dying on a zip (PK reads as PERSID): an uncaught exception exits 1, like "unsafe"
    verdict = fickling.classify(output(tmp_path, 1, "", TRACEBACK))
    # Then it is counted as an error, with the exception
    assert verdict.outcome is Outcome.ERROR
    assert (
        verdict.detail == "crashed (exit 1): NotImplementedError: TODO: Add support for Pickle opcode PERSID"
    )


@pytest.mark.parametrize("adapter", [picklescan, modelscan, modelaudit])
def test_other_tools_crashing_with_exit_1_are_errors(tmp_path: Path, adapter: types.ModuleType) -> None:
    verdict = adapter.classify(output(tmp_path, 1, "", TRACEBACK))
    assert verdict.outcome is Outcome.ERROR
    assert verdict.detail.startswith("crashed (exit 1): NotImplementedError")


def test_fickling_parse_failure_is_an_error_with_the_reason(tmp_path: Path) -> None:
    stderr = "Fickling failed to parse this pickle file. Error: bad opcode\n(If this is a valid pickle...)\n"
    verdict = fickling.classify(output(tmp_path, 2, "", stderr))
    assert verdict.outcome is Outcome.ERROR
    assert "bad opcode" in verdict.detail


def test_fickling_exit_zero_is_clean(tmp_path: Path) -> None:
    assert fickling.classify(output(tmp_path, 0)).outcome is Outcome.CLEAN


def modelaudit_report(tmp_path: Path, issues: list[dict[str, str]], files_scanned: int = 1) -> None:
    write_json(
        tmp_path, modelaudit.REPORT, {"issues": issues, "files_scanned": files_scanned, "success": True}
    )


def test_modelaudit_critical_issue_is_flagged(tmp_path: Path) -> None:
    modelaudit_report(tmp_path, [{"severity": "critical", "message": "dangerous global: os.system"}])
    verdict = modelaudit.classify(output(tmp_path, 1))
    assert verdict.outcome is Outcome.FLAGGED
    assert verdict.detail == "critical: dangerous global: os.system"


def test_modelaudit_exit_2_with_a_warning_is_flagged_and_says_so(tmp_path: Path) -> None:
    # Given an operational error alongside a WARNING issue
    issues = [{"severity": "warning", "message": "SSTI"}, {"severity": "info", "message": "x"}]
    modelaudit_report(tmp_path, issues)
    verdict = modelaudit.classify(output(tmp_path, 2))
    # Then the warning is what the user sees: flagged, noting exit 2; info notes are left out
    assert verdict.outcome is Outcome.FLAGGED
    assert verdict.detail == "(exit 2) warning: SSTI"


def test_modelaudit_report_too_large_to_load_is_classified_from_its_head(tmp_path: Path) -> None:
    # Given a report over the load limit (a big pickle can yield tens of thousands of issues)
    issue = {"message": "byte pattern", "severity": "warning", "location": "x"}
    body = json.dumps({"issues": [issue] * 10, "padding": "x" * (modelaudit.MAX_REPORT_BYTES + 1)}, indent=4)
    (tmp_path / modelaudit.REPORT).write_text(body)
    # When classified
    verdict = modelaudit.classify(output(tmp_path, 1))
    # Then the issues at its head still describe it
    assert verdict.outcome is Outcome.FLAGGED
    assert verdict.detail.startswith("(report too large to load; from its first MiB) warning: byte pattern")


def test_modelaudit_lists_critical_issues_first(tmp_path: Path) -> None:
    issues = [{"severity": "warning", "message": "w"}, {"severity": "critical", "message": "c"}]
    modelaudit_report(tmp_path, issues)
    assert modelaudit.classify(output(tmp_path, 1)).detail == "critical: c; warning: w"


def test_modelaudit_inconclusive_info_only_run_is_an_error(tmp_path: Path) -> None:
    modelaudit_report(tmp_path, [{"severity": "info", "message": "analysis incomplete"}])
    verdict = modelaudit.classify(output(tmp_path, 2))
    assert verdict.outcome is Outcome.ERROR
    assert "analysis incomplete" in verdict.detail


def test_modelaudit_nothing_scanned_is_unsupported(tmp_path: Path) -> None:
    modelaudit_report(tmp_path, [], files_scanned=0)
    assert modelaudit.classify(output(tmp_path, 2)).outcome is Outcome.UNSUPPORTED


def modelshield_json(verdict: str, findings: list[dict[str, str]] | None = None) -> str:
    return json.dumps({"results": [{"path": "m", "verdict": verdict, "findings": findings or []}]})


@pytest.mark.parametrize(
    ("verdict", "returncode", "expected"),
    [
        ("BLOCKED", 1, Outcome.FLAGGED),
        ("ERROR", 1, Outcome.FLAGGED),  # fail closed counts as flagged, as the brief defines
        ("ALLOWED", 0, Outcome.CLEAN),
        ("ALLOWED_WITH_WARNINGS", 0, Outcome.CLEAN),
    ],
)
def test_modelshield_verdicts(tmp_path: Path, verdict: str, returncode: int, expected: Outcome) -> None:
    finding = {"rule": "MS-CODE-EXEC", "message": "os.system"}
    result = modelshield.classify(output(tmp_path, returncode, modelshield_json(verdict, [finding])))
    assert result.outcome is expected


def test_modelshield_detail_tells_a_detection_from_a_refusal(tmp_path: Path) -> None:
    finding = {"rule": "MS-SCAN-INCOMPLETE", "message": "memo limit"}
    verdict = modelshield.classify(output(tmp_path, 1, modelshield_json("ERROR", [finding])))
    assert verdict.detail == "ERROR: MS-SCAN-INCOMPLETE: memo limit"


def test_modelshield_without_json_is_an_error(tmp_path: Path) -> None:
    verdict = modelshield.classify(output(tmp_path, 1, "", "Traceback\nImportError: x"))
    assert verdict.outcome is Outcome.ERROR
    assert "ImportError" in verdict.detail


# -- aggregation and the report -------------------------------------------------------------------------
def rows() -> list[cs.Row]:
    return [
        cs.Row("a", "evil1.pkl", "malicious", Outcome.FLAGGED),
        cs.Row("a", "evil2.pkl", "malicious", Outcome.CLEAN),
        cs.Row("a", "evil3.onnx", "malicious", Outcome.UNSUPPORTED),
        cs.Row("a", "good.pt", "benign", Outcome.FLAGGED),
        cs.Row("a", "good.npy", "benign", Outcome.TIMEOUT),
        cs.Row("a", "good.gguf", "benign", Outcome.CLEAN),
        cs.Row("a", "big.pt", "large", Outcome.FLAGGED),  # large files are not corpus samples
        cs.Row("b", "evil1.pkl", "malicious", Outcome.NOT_RUN, "install failed"),
    ]


def test_summary_separates_detected_missed_errors_and_false_alarms() -> None:
    # Given outcomes for tool a on three malicious and three benign samples
    a, b = cs.summarize_corpus(rows(), ["a", "b"])
    # Then each sample lands in exactly one bucket
    assert (a.malicious, a.benign) == (3, 3)
    assert a.detected == ["evil1.pkl"]
    assert a.missed == ["evil2.pkl"]
    assert a.malicious_other == ["evil3.onnx (unsupported)"]
    assert a.false_alarms == ["good.pt"]
    assert a.benign_other == ["good.npy (timeout)"]
    # And a tool that could not run is marked, not counted as missing everything
    assert b.not_run and b.detected == [] and b.missed == []


def run_info(tmp_path: Path) -> cs.RunInfo:
    adapters = [
        dataclasses.replace(picklescan.ADAPTER, name="a"),
        dataclasses.replace(picklescan.ADAPTER, name="b"),
    ]
    samples = [
        cs.Sample("evil1.pkl", tmp_path / "evil1.pkl", "malicious", "os.system via GLOBAL"),
        cs.Sample("evil2.pkl", tmp_path / "evil2.pkl", "malicious"),
        cs.Sample("evil3.onnx", tmp_path / "evil3.onnx", "malicious"),
        cs.Sample("good.pt", tmp_path / "good.pt", "benign"),
        cs.Sample("good.npy", tmp_path / "good.npy", "benign"),
        cs.Sample("good.gguf", tmp_path / "good.gguf", "benign"),
        cs.Sample("big.pt", tmp_path / "big.pt", "large", "PyTorch checkpoint", 1 << 30),
    ]
    large = cs.Row("a", "big.pt", "large", Outcome.FLAGGED, "found it", 12.34, 2 * 1024 * 1024)
    return cs.RunInfo(
        command="python benchmarks/compare_scanners.py",
        started="2026-01-01 00:00 UTC",
        machine={"nproc": "2"},
        tools=[
            cs.ToolStatus("a", tmp_path, "1.0", ready=True, packages=("a==1.0",)),
            cs.ToolStatus("b", tmp_path, reason="install failed: no wheel"),
        ],
        adapters=adapters,
        samples=samples,
        rows=[*rows()[:6], large, rows()[7]],
        problems=["tests/corpus/x.py: boom"],
        timeouts={"corpus": 60, "large": 300},
    )


def test_markdown_reports_counts_names_versions_and_measurements(tmp_path: Path) -> None:
    # When the report is rendered
    text = cs.render_markdown(run_info(tmp_path))
    # Then it carries the command, the versions (or why a tool did not run) and the pins
    assert "python benchmarks/compare_scanners.py" in text
    assert "| a | 1.0 |" in text
    assert "| b | not run: install failed: no wheel |" in text
    assert "`pip install a==1.0`" in text
    # And the corpus counts, the missed and falsely flagged samples by name
    assert "| a | 1/3 | 1 | 1 | 1/3 | 1 |" in text
    assert "| b | not run |" in text
    assert "**a** missed: `evil2.pkl`" in text
    assert "false alarms: `good.pt`" in text
    # And the large-file row with time and peak memory
    row = "| PyTorch checkpoint | 1 GiB (1,073,741,824 B) | a | flagged | 12.3 s | 2,048 MiB | found it |"
    assert row in text
    assert "tests/corpus/x.py: boom" in text


def test_markdown_breaks_the_corpus_down_by_module(tmp_path: Path) -> None:
    # Given samples from two corpus modules
    info = run_info(tmp_path)
    info.samples = [
        dataclasses.replace(
            s, group="pickle_family" if s.name.endswith((".pkl", ".pt", ".npy")) else "formats"
        )
        for s in info.samples
    ]
    # When rendered
    text = cs.render_markdown(info)
    # Then each module gets its own counts (evil1/evil2 .pkl and good.pt/good.npy are pickle_family)
    pickle_part = text.split("tests/corpus/pickle_family.py` (2 malicious, 2 benign)")[1]
    assert "| a | 1/2 | 1 | 0 | 1/2 | 1 |" in pickle_part.split("Only the samples")[0]
    assert "tests/corpus/formats.py` (1 malicious, 1 benign)" in text


def test_writing_the_doc_keeps_hand_written_commentary(tmp_path: Path) -> None:
    # Given a doc with commentary around an old generated block
    doc = tmp_path / "cmp.md"
    doc.write_text(f"# Title\nintro\n{cs.BEGIN}\nold numbers\n{cs.END}\n## Analysis\nkept\n")
    # When a new block is written
    cs.write_doc(doc, f"{cs.BEGIN}\nnew numbers\n{cs.END}")
    # Then only the block changed
    assert doc.read_text() == f"# Title\nintro\n{cs.BEGIN}\nnew numbers\n{cs.END}\n## Analysis\nkept\n"


def test_parse_sizes_accepts_binary_and_decimal_units() -> None:
    assert cs.parse_sizes("torch=1GiB, pickle=200MB,safetensors=256MiB") == {
        "torch": 1 << 30,
        "pickle": 200_000_000,
        "safetensors": 256 << 20,
    }
    with pytest.raises(Exception, match="bad size"):
        cs.parse_sizes("weights=1GiB")


# -- corpus loading ---------------------------------------------------------------------------------------
def test_generators_are_found_by_prefix_in_source_order_and_written(tmp_path: Path) -> None:
    # Given a module with malicious_*/benign_* generators of the accepted shapes
    module = types.ModuleType("fake_corpus")
    source = (
        "def malicious_b():\n    '''Second.'''\n    return ('b.pkl', b'B')\n"
        "def malicious_a():\n    return b'A'\n"
        "def benign_dir(out):\n    (out / 'x.bin').write_bytes(b'X')\n"
        "def helper():\n    return b'no'\n"
    )
    exec(compile(source, "fake_corpus.py", "exec"), module.__dict__)  # our own test source, not a sample
    found = cs.generators(module, "malicious")
    # Then they come in source order, helpers excluded
    assert [name for name, _ in found] == ["malicious_b", "malicious_a"]
    files = [f for name, fn in found for f in cs.call_generator(name, fn, tmp_path)]
    assert [(f.name, f.data, f.description) for f in files] == [("b.pkl", b"B", "Second."), ("a", b"A", "")]
    (name, fn) = cs.generators(module, "benign")[0]
    written = cs.call_generator(name, fn, tmp_path)
    assert [(f.name, f.data) for f in written] == [("dir__x.bin", b"X")]


def test_manifest_entry_with_companions_writes_them_beside_the_sample(tmp_path: Path) -> None:
    # Given an entry whose builder returns the model plus its external weights
    entry = cs.CorpusEntry(
        "benign", "ext/model.onnx", lambda _: {"model.onnx": b"M", "weights.bin": b"W"}, ""
    )
    generated = cs.build_entry(entry, types.ModuleType("m"))
    # When written
    sample = cs._write_sample(tmp_path, "benign", generated)
    # Then only the model is the sample, and the weights sit next to it
    assert (sample.name, sample.size) == ("ext/model.onnx", 1)
    assert (tmp_path / "ext" / "weights.bin").read_bytes() == b"W"


# -- large files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [0, 1, 2, 999, 1000, 1001, 70_000])
def test_dense_pickle_is_byte_identical_to_pickle_dumps(count: int) -> None:
    # Given the streaming writer and CPython's pickler on the same list
    buffer = io.BytesIO()
    written = cs.write_dense_pickle(buffer, count)
    expected = pickle.dumps([cs.dense_item(i) for i in range(count)], protocol=4)
    # Then the bytes are the same (frames, memo and batching included)
    assert buffer.getvalue() == expected
    assert written == len(expected)


def test_dense_pickle_by_size_stops_at_a_whole_batch_past_the_target() -> None:
    buffer = io.BytesIO()
    written = cs.write_dense_pickle(buffer, min_bytes=500_000)
    assert 500_000 <= written < 520_000
    # And it is pickle.dumps of a whole number of 1000-element batches (counted statically, never loaded)
    count = sum(1 for op, _, _ in pickletools.genops(buffer.getvalue()) if op.name == "TUPLE2")
    assert count % 1000 == 0
    assert buffer.getvalue() == pickle.dumps([cs.dense_item(i) for i in range(count)], protocol=4)


def test_sparse_safetensors_has_the_exact_size_and_a_header_that_tiles_the_body(tmp_path: Path) -> None:
    # Given a 3 MiB file
    path = tmp_path / "m.safetensors"
    cs.write_sparse_safetensors(path, 3 << 20)
    raw = path.read_bytes()
    # Then its size is exact and the header is valid JSON padded to 8 bytes
    assert len(raw) == 3 << 20
    (header_len,) = struct.unpack("<Q", raw[:8])
    assert header_len % 8 == 0
    header = json.loads(raw[8 : 8 + header_len])
    # And the tensors' offsets are sorted, contiguous and cover the body exactly
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - header_len
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    assert all(v["shape"][0] * 4 == v["data_offsets"][1] - v["data_offsets"][0] for v in tensors)
    # And the reference reader agrees (it only reads the header and zeros)
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert len(list(f.keys())) == cs.SAFETENSORS_TENSORS


# -- measuring --------------------------------------------------------------------------------------------
def test_peak_rss_is_the_tools_own_not_the_harness(tmp_path: Path) -> None:
    # Given a harness process holding 200 MiB
    ballast = bytearray(200 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    # When it measures a tiny child and one that allocates 120 MiB
    small = cs.run_measured([sys.executable, "-c", "pass"], cwd=tmp_path, timeout=30)
    big = cs.run_measured(
        [sys.executable, "-c", "b = bytearray(120 << 20); b[::4096] = b'x' * len(b[::4096])"],
        cwd=tmp_path,
        timeout=30,
    )
    del ballast
    # Then neither inherits the harness's memory, and the allocation shows
    assert small.returncode == 0 and big.returncode == 0
    assert small.max_rss_kib < 100 * 1024
    assert 120 * 1024 <= big.max_rss_kib < 250 * 1024


def test_timeout_kills_the_tool_and_its_children(tmp_path: Path) -> None:
    # Given a tool that starts a grandchild (recording its pid) and both sleep
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(30)\n"
    )
    # When measured with a 1 s limit
    measured = cs.run_measured([sys.executable, "-c", code], cwd=tmp_path, timeout=1.0)
    # Then it is reported as timed out promptly
    assert measured.timed_out
    assert measured.wall_seconds < 5
    # And the grandchild is gone too (dead or a zombie awaiting its reaper)
    assert not _running(int(pid_file.read_text()))


def _running(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return os.path.exists(f"/proc/{pid}")


def test_output_and_exit_code_are_captured(tmp_path: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    measured = cs.run_measured([sys.executable, "-c", code], cwd=tmp_path, timeout=30)
    assert (measured.returncode, measured.stdout, measured.stderr) == (3, "out\n", "err\n")
    assert not measured.timed_out


def test_saved_results_render_the_same_report(tmp_path: Path) -> None:
    # Given a run saved to JSON
    info = run_info(tmp_path)
    info.adapters = [a for a in cs.ADAPTERS if a.name in ("modelshield", "picklescan")]
    info.tools = [
        cs.ToolStatus("modelshield", tmp_path, "0.1.0", ready=True),
        cs.ToolStatus("picklescan", tmp_path, reason="install failed"),
    ]
    info.rows = [
        dataclasses.replace(r, tool={"a": "modelshield", "b": "picklescan"}[r.tool]) for r in info.rows
    ]
    saved = tmp_path / "results.json"
    cs.save_results(saved, info)
    # When it is loaded back and rendered
    again = cs.load_results(saved)
    # Then the report is identical (the docs can be regenerated without re-running the tools)
    assert cs.render_markdown(again) == cs.render_markdown(info)
