"""Text files (inert, but checked to the end) and the Jinja chat-template analysis they share with GGUF."""

from __future__ import annotations

import json

import pytest
from modelshield.models import Format, RuleId
from modelshield.scanning.jinja import analyse_template, split_blocks, tokenize

from tests.corpus import formats as corpus
from tests.corpus.formats import findings_of, problem_rules, rules_of, scan_bytes

# -- text files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"hidden_size": 8, "architectures": ["Tiny"]}',
        b"name: tiny\nlayers: 2\n",
        "# Model card \u2014 caf\u00e9 \U0001f600\n\nSome text.\n".encode(),
        b"plain words\twith tabs\r\nand CRLF\n",
    ],
    ids=["json", "yaml", "markdown-utf8", "plain"],
)
def test_text_files_are_inert(content: bytes) -> None:
    report = scan_bytes(content, "file.txt")
    assert report.format == Format.TEXT
    assert not rules_of(report) & problem_rules(), report.findings


def test_model_card_front_matter_gives_the_license() -> None:
    report = scan_bytes(corpus.model_card("llama3.1"), "README.md")
    assert report.metadata["license"] == "llama3.1"


def test_json_license_and_list_licenses() -> None:
    assert scan_bytes(b'{"license": "mit"}', "config.json").metadata["license"] == "mit"
    card = b"---\nlicense:\n- mit\n- apache-2.0\n---\n"
    assert scan_bytes(card, "README.md").metadata["license"] == "mit, apache-2.0"


def test_binary_data_after_a_text_head_fails_closed() -> None:
    # Given 8 KiB of text followed by a binary payload (the sniffer only sees the head)
    data = b"a" * 8192 + b"\x00\x01binary"
    report = scan_bytes(data, "notes.txt")
    # Then the scan does not call it clean
    hit = findings_of(report, RuleId.SCAN_INCOMPLETE)[0]
    assert "byte 8192" in hit.message


def test_invalid_utf8_later_in_the_file_fails_closed() -> None:
    report = scan_bytes(b"b" * 5000 + b"\xff\xfe", "x.txt")
    assert findings_of(report, RuleId.SCAN_INCOMPLETE)


def test_control_bytes_are_not_text() -> None:
    report = scan_bytes(b"\x08\x01\x12\x07pytorch", "x.bin")
    assert report.format != Format.TEXT


def test_tokenizer_config_chat_template_is_analysed() -> None:
    report = scan_bytes(corpus.tokenizer_config(corpus.SSTI_TEMPLATE), "tokenizer_config.json")
    assert findings_of(report, RuleId.CODE_EXEC)
    clean = scan_bytes(corpus.tokenizer_config(corpus.BENIGN_CHAT_TEMPLATE), "tokenizer_config.json")
    assert not rules_of(clean) & problem_rules()


def test_named_chat_templates_list_is_analysed() -> None:
    data = json.dumps(
        {
            "chat_template": [
                {"name": "default", "template": "{{ x }}"},
                {"name": "rag", "template": corpus.SSTI_TEMPLATE},
            ]
        }
    ).encode()
    report = scan_bytes(data, "tokenizer_config.json")
    assert all("'rag'" in f.message for f in findings_of(report, RuleId.CODE_EXEC))


def test_jinja_file_is_analysed_by_its_name() -> None:
    report = scan_bytes(corpus.SSTI_TEMPLATE.encode(), "chat_template.jinja")
    assert findings_of(report, RuleId.CODE_EXEC)
    assert not findings_of(scan_bytes(corpus.SSTI_TEMPLATE.encode(), "notes.md"), RuleId.CODE_EXEC)


# -- the Jinja lexer ---------------------------------------------------------------------------------------


def test_blocks_skip_comments_raw_and_braces_inside_strings() -> None:
    source = "a{# {{ x.__class__ }} #}b{% raw %}{{ y.__class__ }}{% endraw %}{{ {'k': '}}'} }}{%- if z -%}"
    blocks, error = split_blocks(source)
    assert error is None
    assert [(kind, source[s:e].strip()) for kind, s, e in blocks] == [
        ("stmt", "raw"),
        ("var", "{'k': '}}'}"),
        ("stmt", "if z"),
    ]


def test_tokens_decode_string_escapes_like_jinja() -> None:
    source = '\'\\x5f\\x5f\' ~ "a\\"b" | attr(x)'
    tokens = tokenize(source, 0, len(source))
    assert [(t.kind, t.value) for t in tokens] == [
        ("string", "__"),
        ("op", "~"),
        ("string", 'a"b'),
        ("op", "|"),
        ("name", "attr"),
        ("op", "("),
        ("name", "x"),
        ("op", ")"),
    ]


# -- the analysis ------------------------------------------------------------------------------------------

BENIGN_TEMPLATES = {
    "chatml": corpus.BENIGN_CHAT_TEMPLATE,
    "namespace loop": (
        "{% set ns = namespace(found=false) %}{% for m in messages %}{% if m.role == 'system' %}"
        "{% set ns.found = true %}{% endif %}{% endfor %}{{ bos_token }}{{ messages[0]['content']|trim }}"
        "{% if not ns.found %}{{ raise_exception('need a system message') }}{% endif %}"
    ),
    "tools json": (
        "{% for tool in tools %}{{ tool | tojson(indent=2) }}"
        "{{ tool['function']['name'] | replace('-', '_') }}"
        "{% endfor %}{{ '<|tool▁calls▁begin|>' }}{% for _ in range(3) %}.{% endfor %}"
    ),
    "raw block": "{% raw %}{{ ''.__class__ }}{% endraw %}",
}


@pytest.mark.parametrize("name", sorted(BENIGN_TEMPLATES))
def test_normal_templates_raise_nothing(name: str) -> None:
    assert analyse_template(BENIGN_TEMPLATES[name]) == []


MALICIOUS = {
    **corpus.OBFUSCATED_TEMPLATES,
    "ssti": corpus.SSTI_TEMPLATE,
    "subscript dunder": "{{ x['__globals__'] }}",
    "dunder kwarg": "{{ dict(__class__=1) }}",
    "bare import": "{{ __import__('os').system('echo pwned') }}",
    "self context": "{{ self._TemplateReference__context }}",
    "unicode escape": "{{ ''['\\u005f\\u005fclass\\u005f\\u005f'] }}",
    "octal escape": "{{ ''['\\137\\137class\\137\\137'] }}",
    "reversed slice": "{{ ''['__ssalc__'[::-1]] }}",
}


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_templates_reaching_python_internals_are_code_execution(name: str) -> None:
    issues = analyse_template(MALICIOUS[name])
    assert RuleId.CODE_EXEC in {i.rule for i in issues}, name


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{% set a = '__cla' %}{% set b = 'ss__' %}{{ ''[a ~ b] }}", "across the template"),
        ("{{ x|attr(name) }}", "computed attribute name"),
        ("{{ '%c%c'|format(95, 95) }}", "'%c'"),
        ("{% include 'other.j2' %}", "load other templates"),
    ],
)
def test_obfuscation_we_cannot_fold_is_unknown_code(template: str, fragment: str) -> None:
    issues = [i for i in analyse_template(template) if i.rule is RuleId.CODE_UNKNOWN]
    assert any(fragment in i.message for i in issues), analyse_template(template)


def test_unlexable_template_is_malformed_with_a_text_backstop() -> None:
    issues = analyse_template("{{ 'ok' }}{{ x.__class__ ")
    rules = {i.rule for i in issues}
    assert RuleId.MALFORMED in rules and RuleId.CODE_EXEC in rules


def test_huge_template_is_truncated_and_reported() -> None:
    issues = analyse_template("a" * 1_000_001)
    assert [i.rule for i in issues] == [RuleId.SCAN_INCOMPLETE]
