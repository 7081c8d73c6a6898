"""Static analysis of Jinja chat templates (GGUF `tokenizer.chat_template`, HF `chat_template`).

Why: loaders render these templates with Jinja2, and some did so outside the sandbox (llama-cpp-python,
CVE-2024-34359), so a template like `{{ ''.__class__.__mro__[1].__subclasses__() }}` walks from a string to
every class in the process and on to `os.popen`. Even sandboxed renderers have had escapes. A normal chat
template only loops over messages and concatenates strings; reaching Python internals is never needed.

How: a small Jinja lexer (no jinja2 at runtime; we never render) splits the template into text and
`{{ }}` / `{% %}` / `{# #}` blocks, honouring `{% raw %}` and whitespace-control markers, and tokenizes each
block (names, string literals with Python escapes decoded, numbers, operators). Then, per block:
- attribute access `.name` / `['name']` / `|attr('name')` to a private or dunder name, or to one of the
  names that lead to code (`popen`, `os`, `eval`, `__globals__` ...) -> MS-CODE-EXEC;
- dunder names or dangerous globals used as variables -> MS-CODE-EXEC;
- string literals that *build* such names: each literal, all literals of the block concatenated (catches
  `'__cla' + 'ss__'`, `['__cla','ss__']|join`), repeated (`'_' * 2`) and reversed (`|reverse`, `[::-1]`)
  -> MS-CODE-EXEC;
- obfuscation we cannot fold (`|attr(` with a computed name, `%c` formatting to build characters) and
  template loading (`include`/`import`/`extends`/`from`) -> MS-CODE-UNKNOWN;
- text the lexer cannot tokenize -> MS-MALFORMED (a renderer would reject it too).
Not covered: names assembled at run time from message contents or from `dict(...)|list` keyword tricks
without underscores; those need the dunder names, which the checks above look for in every form they know.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass

from modelshield.models import RuleId, Severity

MAX_TEMPLATE_CHARS = 1_000_000  # longer templates are analysed up to this point and reported

# Attributes (and subscript keys) that lead from any object to code execution or process internals.
DANGEROUS_ATTRS = frozenset(
    {
        "os",
        "sys",
        "popen",
        "subprocess",
        "builtins",
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "import_module",
        "load_module",
        "globals",
        "locals",
        "modules",
        "mro",
        "func_globals",
        "func_code",
        "f_globals",
        "f_locals",
        "f_back",
        "f_builtins",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "ag_frame",
        "tb_frame",
        "co_code",
        "spawn",
        "spawnv",
        "execv",
        "execve",
        "check_output",
        "Popen",
    }
)
# Bare names that have no business in a chat template when called, indexed or dereferenced.
DANGEROUS_GLOBALS = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "globals",
        "locals",
        "open",
        "self",
        "lipsum",
        "cycler",
        "joiner",
    }
)
# Names harmless when called but dangerous when dereferenced: only flagged when followed by '.' or '['.
_DEREF_ONLY_GLOBALS = frozenset({"self", "lipsum", "cycler", "joiner"})
_DUNDER = re.compile(r"__[A-Za-z][A-Za-z0-9_]*__")
_Report = Callable[[str, int], None]
_LOADING_TAGS = frozenset({"include", "import", "extends", "from"})

_NAME = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?")
_OPERATORS = (
    "//",
    "**",
    "==",
    "!=",
    "<=",
    ">=",
    "+",
    "-",
    "/",
    "*",
    "%",
    "~",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    "<",
    ">",
    "=",
    ".",
    ":",
    "|",
    ",",
    ";",
)
_OPENERS = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class TemplateIssue:
    rule: RuleId
    severity: Severity
    message: str
    offset: int  # character offset in the template
    snippet: str


@dataclass(frozen=True)
class Token:
    kind: str  # "name" | "string" | "number" | "op"
    value: str
    offset: int


class TemplateSyntaxError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


# -- lexing --------------------------------------------------------------------------------------------
def split_blocks(source: str) -> tuple[list[tuple[str, int, int]], TemplateSyntaxError | None]:
    """(kind, start, end) of every `{{ }}` ("var") and `{% %}` ("stmt") block body (comments dropped),
    plus the error that stopped the split, if any (the blocks before it are still returned)."""
    blocks: list[tuple[str, int, int]] = []
    try:
        _split(source, blocks)
    except TemplateSyntaxError as exc:
        return blocks, exc
    return blocks, None


def _split(source: str, blocks: list[tuple[str, int, int]]) -> None:
    pos, n = 0, len(source)
    while True:
        start = source.find("{", pos)
        while start != -1 and start + 1 < n and source[start + 1] not in "{%#":
            start = source.find("{", start + 1)
        if start == -1 or start + 1 >= n:
            return
        opener = source[start + 1]
        body = start + 2
        if body < n and source[body] in "-+":
            body += 1
        if opener == "#":
            close = source.find("#}", body)
            if close == -1:
                raise TemplateSyntaxError("unterminated comment", start)
            pos = close + 2
            continue
        kind = "var" if opener == "{" else "stmt"
        end = _block_end(source, body, "}}" if kind == "var" else "%}")
        inner_end = end - 1 if end > body and source[end - 1] in "-+" else end
        blocks.append((kind, body, inner_end))
        pos = end + 2
        if kind == "stmt" and re.fullmatch(r"\s*raw\s*", source[body:inner_end]):
            raw_end = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}").search(source, pos)
            if raw_end is None:
                raise TemplateSyntaxError("unterminated raw block", start)
            pos = raw_end.end()


def _block_end(source: str, pos: int, closer: str) -> int:
    """Offset of the closing delimiter, skipping string literals and balanced brackets as Jinja does."""
    depth, n = 0, len(source)
    while pos < n:
        ch = source[pos]
        if ch in "'\"":
            pos = _string_end(source, pos)
            continue
        if depth == 0 and source.startswith(closer, pos):
            return pos
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and depth > 0:
            depth -= 1
        pos += 1
    raise TemplateSyntaxError(f"unterminated block (no {closer!r})", pos)


def _string_end(source: str, pos: int) -> int:
    quote, i, n = source[pos], pos + 1, len(source)
    while i < n:
        if source[i] == "\\":
            i += 2
            continue
        if source[i] == quote:
            return i + 1
        i += 1
    raise TemplateSyntaxError("unterminated string literal", pos)


def tokenize(source: str, start: int, end: int) -> list[Token]:
    """Tokens of one block body. String values have their escapes decoded the way Jinja does."""
    tokens: list[Token] = []
    pos = start
    while pos < end:
        ch = source[pos]
        if ch.isspace():
            pos += 1
            continue
        if ch in "'\"":
            close = _string_end(source, pos)
            tokens.append(Token("string", _unescape(source[pos + 1 : close - 1], pos), pos))
            pos = close
            continue
        m = _NAME.match(source, pos, end)
        if m:
            tokens.append(Token("name", m.group(), pos))
            pos = m.end()
            continue
        m = _NUMBER.match(source, pos, end)
        if m:
            tokens.append(Token("number", m.group(), pos))
            pos = m.end()
            continue
        for op in _OPERATORS:
            if source.startswith(op, pos):
                tokens.append(Token("op", op, pos))
                pos += len(op)
                break
        else:
            raise TemplateSyntaxError(f"unexpected character {ch!r}", pos)
    return tokens


def _unescape(raw: str, offset: int) -> str:
    """Jinja decodes literals with Python's unicode-escape rules, so '\\x5f\\x5f' is '__'."""
    try:
        return codecs.decode(raw.encode("ascii", "backslashreplace"), "unicode-escape")
    except (UnicodeDecodeError, ValueError) as exc:
        raise TemplateSyntaxError(f"bad escape in string literal: {exc}", offset) from None


# -- analysis ------------------------------------------------------------------------------------------
def analyse_template(source: str) -> list[TemplateIssue]:
    """Every way this template reaches (or tries to hide reaching) Python internals. Never raises."""
    issues: list[TemplateIssue] = []
    if len(source) > MAX_TEMPLATE_CHARS:
        issues.append(
            TemplateIssue(
                RuleId.SCAN_INCOMPLETE,
                Severity.HIGH,
                f"chat template is {len(source)} characters; only the first {MAX_TEMPLATE_CHARS} analysed",
                MAX_TEMPLATE_CHARS,
                "",
            )
        )
        source = source[:MAX_TEMPLATE_CHARS]
    blocks, error = split_blocks(source)
    lex_failed = error is not None
    if error is not None:
        issues.append(
            _issue(RuleId.MALFORMED, Severity.MEDIUM, f"template does not lex: {error}", source, error.offset)
        )
    all_literals: list[str] = []
    for kind, start, end in blocks:
        try:
            tokens = tokenize(source, start, end)
        except TemplateSyntaxError as exc:
            issues.append(
                _issue(
                    RuleId.MALFORMED,
                    Severity.MEDIUM,
                    f"template block does not lex: {exc}",
                    source,
                    exc.offset,
                )
            )
            lex_failed = True
            continue
        issues.extend(_analyse_block(kind, tokens, source))
        all_literals.extend(t.value for t in tokens if t.kind == "string")
    joined = "".join(all_literals)
    m = _DUNDER.search(joined) or _DUNDER.search(joined[::-1])
    if m and not any(i.rule is RuleId.CODE_EXEC for i in issues):
        issues.append(
            _issue(
                RuleId.CODE_UNKNOWN,
                Severity.HIGH,
                f"string literals across the template assemble the dunder name {m.group()!r}",
                source,
                0,
            )
        )
    if lex_failed:
        issues.extend(_grep_backstop(source))
    return _dedupe(issues)


_BACKSTOP = re.compile(
    r"__[A-Za-z][A-Za-z0-9_]*__|\.\s*(?:popen|subprocess|import_module|f_globals|func_globals)\b"
)


def _grep_backstop(source: str) -> list[TemplateIssue]:
    """When our lexer fails (and Jinja's might not), fall back to searching the raw text."""
    m = _BACKSTOP.search(source)
    if not m:
        return []
    return [
        _issue(
            RuleId.CODE_EXEC,
            Severity.CRITICAL,
            f"unlexable template mentions {m.group()!r} (Python internals)",
            source,
            m.start(),
        )
    ]


def _issue(rule: RuleId, severity: Severity, message: str, source: str, offset: int) -> TemplateIssue:
    snippet = source[max(0, offset - 30) : offset + 50].replace("\n", "\\n")
    return TemplateIssue(rule, severity, message, offset, snippet)


def _dedupe(issues: list[TemplateIssue]) -> list[TemplateIssue]:
    seen: set[tuple[RuleId, str]] = set()
    out: list[TemplateIssue] = []
    for issue in issues:
        key = (issue.rule, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def _is_private_or_dangerous_attr(name: str) -> bool:
    return name.startswith("_") or name in DANGEROUS_ATTRS


def _analyse_block(kind: str, tokens: list[Token], source: str) -> list[TemplateIssue]:
    issues: list[TemplateIssue] = []

    def exec_(message: str, offset: int) -> None:
        issues.append(_issue(RuleId.CODE_EXEC, Severity.CRITICAL, message, source, offset))

    def unknown(message: str, offset: int) -> None:
        issues.append(_issue(RuleId.CODE_UNKNOWN, Severity.HIGH, message, source, offset))

    if kind == "stmt" and tokens and tokens[0].kind == "name" and tokens[0].value in _LOADING_TAGS:
        unknown(f"template uses '{{% {tokens[0].value} %}}' to load other templates", tokens[0].offset)

    literals: list[str] = []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i > 0 else None
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "name":
            after_dot = prev is not None and prev.kind == "op" and prev.value == "."
            if after_dot and _is_private_or_dangerous_attr(tok.value):
                exec_(
                    f"template accesses attribute {tok.value!r} (Python internals / code execution)",
                    tok.offset,
                )
            elif not after_dot and _DUNDER.fullmatch(tok.value):
                exec_(f"template uses the dunder name {tok.value!r}", tok.offset)
            elif not after_dot and tok.value in DANGEROUS_GLOBALS:
                derefs = nxt is not None and nxt.kind == "op" and nxt.value in (".", "[")
                calls = nxt is not None and nxt.kind == "op" and nxt.value == "("
                if derefs or (calls and tok.value not in _DEREF_ONLY_GLOBALS):
                    exec_(f"template uses the global {tok.value!r}", tok.offset)
            if tok.value == "attr" and prev is not None and prev.kind == "op" and prev.value == "|":
                _check_attr_filter(tokens, i, exec_, unknown)
        elif tok.kind == "string":
            repeat = _repeat_count(tokens, i)
            literals.append(tok.value * repeat)
            subscript = prev is not None and prev.value == "[" and nxt is not None and nxt.value == "]"
            if subscript and _is_private_or_dangerous_attr(tok.value):
                exec_(f"template subscripts with {tok.value!r} (attribute access by name)", tok.offset)
            if "%c" in tok.value:
                unknown("template formats characters with '%c' (builds names from numbers)", tok.offset)
            if repeat > 1 and "_" in tok.value:
                unknown(f"template repeats {tok.value!r} to build a name", tok.offset)
    for candidate in _string_candidates(literals):
        m = _DUNDER.search(candidate)
        if m:
            where = tokens[0].offset if tokens else 0
            exec_(f"template builds the dunder name {m.group()!r} from string literals", where)
            break
    return issues


def _check_attr_filter(tokens: list[Token], i: int, exec_: _Report, unknown: _Report) -> None:
    """`x|attr('name')`: literal names are judged like attributes; computed ones cannot be."""
    args = tokens[i + 1 : i + 4]
    if len(args) >= 3 and args[0].value == "(" and args[1].kind == "string" and args[2].value == ")":
        name = args[1].value
        if _is_private_or_dangerous_attr(name) or _DUNDER.search(name):
            exec_(f"template reads attribute {name!r} through the attr filter", tokens[i].offset)
        return
    unknown("template calls the attr filter with a computed attribute name", tokens[i].offset)


def _repeat_count(tokens: list[Token], i: int) -> int:
    """'_' * 2 or 2 * '_' (capped): the literal as Jinja would evaluate it."""
    for a, b in ((i + 1, i + 2), (i - 1, i - 2)):
        if 0 <= min(a, b) and max(a, b) < len(tokens):
            op, num = tokens[a], tokens[b]
            if op.kind == "op" and op.value == "*" and num.kind == "number":
                try:
                    return max(1, min(int(num.value.replace("_", "")), 64))
                except ValueError:
                    return 1
    return 1


def _string_candidates(literals: list[str]) -> list[str]:
    """Strings the block may assemble: each literal, all of them joined, and those reversed."""
    if not literals:
        return []
    joined = "".join(literals)
    out = [*literals, joined]
    return out + [s[::-1] for s in out]
