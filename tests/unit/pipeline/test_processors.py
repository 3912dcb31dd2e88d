"""Processors, as tables: each kind, each preset, the chain's order, scope and counting."""

from __future__ import annotations

import pytest

from agent.pipeline.processors import (
    DROPPED,
    ERROR,
    MASKED,
    PARSED,
    UNMATCHED,
    ProcessorConfig,
    build_chain_set,
)
from agent.pipeline.processors.options import (
    OPTIONS_BY_TYPE,
    AddFieldsOptions,
    FilterOptions,
    MaskOptions,
    MultilineOptions,
    ParseJsonOptions,
    ParseKvOptions,
    ParseRegexOptions,
    RemoveOptions,
    RenameOptions,
)
from agent.pipeline.processors.mask import any_word_finder
from agent.pipeline.processors.parsers import split_pairs
from agent.pipeline.processors.patterns import PatternError, compile_pattern
from agent.pipeline.processors.presets import MASK_PRESETS


def log(**contents: str) -> dict[str, str]:
    return {key.replace("_", "-"): value for key, value in contents.items()}


BASE = log(hostname="web-1", pri_text="user.info", protocol_version="0", app_name="todo-list", procid="705",
           msgid="-", msg="hello")


def as_bytes(contents: dict[str, str]) -> dict[str, bytes]:
    return {key: value.encode() for key, value in contents.items()}


def as_text(contents: dict[str, bytes]) -> dict[str, str]:
    return {key: value.decode() for key, value in contents.items()}


def run_one(kind: str, options, contents: dict[str, str]) -> tuple[dict[str, str] | None, dict]:
    """Tables speak text; processors see and give bytes, as the transform hands them."""
    chains = build_chain_set([ProcessorConfig("p", kind, (), options)])
    chain = chains.for_tag("sys_tag")
    assert chain is not None
    log = as_bytes(contents)
    kept = chain.run(log)
    return (as_text(log) if kept else None), dict(chains.counts)


@pytest.mark.parametrize(
    ("kind", "options", "contents", "kept", "counts"),
    [
        ("drop", FilterOptions("app-name", equals="CRON"), {**BASE, "app-name": "CRON"}, False, {("p", DROPPED): 1}),
        ("drop", FilterOptions("app-name", equals="CRON"), BASE, True, {}),
        ("drop", FilterOptions("msg", matches=r"GET /healthz"), {**BASE, "msg": "10.0.0.1 GET /healthz 200"}, False,
         {("p", DROPPED): 1}),
        ("drop", FilterOptions("msg", matches=r"GET /healthz"), BASE, True, {}),
        ("drop", FilterOptions("trace", present=True), {**BASE, "trace": "x"}, False, {("p", DROPPED): 1}),
        ("drop", FilterOptions("trace", present=False), BASE, False, {("p", DROPPED): 1}),
        ("drop", FilterOptions("missing", matches="."), BASE, True, {}),  # an absent key matches nothing
        ("keep", FilterOptions("pri-text", matches=r"\.(warning|err|crit|alert|emerg)$"), BASE, False,
         {("p", DROPPED): 1}),
        ("keep", FilterOptions("pri-text", matches=r"\.(warning|err|crit|alert|emerg)$"),
         {**BASE, "pri-text": "daemon.err"}, True, {}),
        ("keep", FilterOptions("pri-text", matches=r"\.(warning|err|crit|alert|emerg)$"),
         {**BASE, "pri-text": "daemon.error-ish"}, False, {("p", DROPPED): 1}),
    ],
)
def test_drop_and_keep(kind, options, contents, kept, counts) -> None:
    result, seen = run_one(kind, options, contents)
    assert (result is not None) == kept
    if kept:
        assert result == contents  # a filter changes nothing
    assert seen == counts


@pytest.mark.parametrize(
    ("preset", "text", "masked"),
    [
        ("password", "login password=hunter2 ok", "login password=*** ok"),
        ("password", 'user bob passwd: "s3cr3t" from 10.0.0.1', 'user bob passwd: "***" from 10.0.0.1'),
        ("password", '{"password": "s3cr3t", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("password", "PWD=abc&next=1", "PWD=***&next=1"),
        ("password", "the password policy changed", None),
        ("bearer_token", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_-x", "Authorization: Bearer ***"),
        ("bearer_token", "Authorization: Basic dXNlcjpwYXNz==", "Authorization: Basic ***"),
        ("bearer_token", "the bearer of bad news", None),  # a token has 8 characters or more
        ("aliyun_access_key", "AccessKeySecret=abcdefghijklmnopqrstuvwxyz1234", "AccessKeySecret=***"),
        ("aliyun_access_key", 'access_key_secret: "0123456789abcdefABCDEF012345"', 'access_key_secret: "***"'),
        ("aliyun_access_key", "SecurityToken=CAIS8gF1q6Ft5B2yfSjIr5bkKt", "SecurityToken=***"),
        ("aliyun_access_key", "key id LTAI5tAbCdEfGhIjKlMnOp used", "key id LTAI*** used"),
        ("aliyun_access_key", "LTAI is a prefix", None),
        ("email", "sent to jane.doe@example.com today", "sent to j***@example.com today"),
        ("email", "user@localhost", None),
        ("card_number", "paid with 4111 1111 1111 1111 ok", "paid with ****1111 ok"),
        ("card_number", "card 5500-0000-0000-0004", "card ****0004"),
        ("card_number", "card 378282246310005", "card ****0005"),
        ("card_number", "order 4111111111111112 (not Luhn)", None),
        ("card_number", "at 1795591573123 ms", None),
        ("card_number", "short 4111 1111 1111", None),
    ],
)
def test_mask_presets(preset: str, text: str, masked: str | None) -> None:
    result, counts = run_one("mask", MaskOptions(presets=(preset,)), {**BASE, "msg": text})
    assert result is not None
    assert result["msg"] == (text if masked is None else masked)
    assert counts == ({} if masked is None else {("p", MASKED): 1})


def test_every_preset_has_cases() -> None:
    tested = {"password", "bearer_token", "aliyun_access_key", "email", "card_number"}
    assert set(MASK_PRESETS) == tested


@pytest.mark.parametrize(
    ("options", "contents", "expected"),
    [
        (MaskOptions(pattern=r"password=\S+", replacement="password=***"), {"msg": "a password=x b"}, {"msg": "a password=*** b"}),
        (MaskOptions(keys=("msg", "user"), pattern=r"\d{3}", replacement="#"), {"msg": "1234", "user": "x567"},
         {"msg": "#4", "user": "x#"}),
        (MaskOptions(pattern=r"(?P<head>\d{2})\d+", replacement=r"\g<head>**"), {"msg": "id 123456"}, {"msg": "id 12**"}),
        (MaskOptions(keys=("absent",), pattern="x"), {"msg": "x"}, {"msg": "x"}),
        (MaskOptions(pattern="secret", presets=("email",)), {"msg": "secret to a@b.io"}, {"msg": "*** to a***@b.io"}),
    ],
)
def test_mask_patterns(options, contents, expected) -> None:
    result, _ = run_one("mask", options, contents)
    assert result == expected


@pytest.mark.parametrize(
    ("kind", "options", "contents", "expected"),
    [
        ("add_fields", AddFieldsOptions({"env": "prod", "service": "todo-list"}), {"msg": "m"},
         {"msg": "m", "env": "prod", "service": "todo-list"}),
        ("add_fields", AddFieldsOptions({"env": "prod"}), {"env": "dev"}, {"env": "dev"}),
        ("add_fields", AddFieldsOptions({"env": "prod"}, overwrite=True), {"env": "dev"}, {"env": "prod"}),
        ("rename", RenameOptions({"app-name": "app"}), {"app-name": "x", "msg": "m"}, {"msg": "m", "app": "x"}),
        ("rename", RenameOptions({"absent": "y"}), {"msg": "m"}, {"msg": "m"}),
        ("rename", RenameOptions({"a": "b"}), {"a": "1", "b": "2"}, {"b": "1"}),
        ("remove", RemoveOptions(("procid", "msgid", "absent")), {"procid": "1", "msgid": "-", "msg": "m"}, {"msg": "m"}),
    ],
)
def test_field_changes(kind, options, contents, expected) -> None:
    result, counts = run_one(kind, options, contents)
    assert result == expected
    assert counts == {}


@pytest.mark.parametrize(
    ("options", "msg", "expected", "result"),
    [
        (ParseJsonOptions(), '{"level": "info", "user": "bob"}',
         {"msg": '{"level": "info", "user": "bob"}', "level": "info", "user": "bob"}, PARSED),
        (ParseJsonOptions(), '{"n": 42, "ok": true, "none": null, "nested": {"a": [1, "x"]}}',
         {"n": "42", "ok": "true", "none": "null", "nested": '{"a":[1,"x"]}'}, PARSED),
        (ParseJsonOptions(prefix="json."), '{"level": "info"}', {"json.level": "info"}, PARSED),
        (ParseJsonOptions(keep_original=False), '{"level": "info"}', {"level": "info", "msg": None}, PARSED),
        (ParseJsonOptions(keep_original=False), '{"msg": "inner", "level": "info"}', {"msg": "inner", "level": "info"}, PARSED),
        (ParseJsonOptions(), '{"hostname": "spoofed"}', {"hostname": "web-1"}, PARSED),  # skip: the log's value stays
        (ParseJsonOptions(on_conflict="overwrite"), '{"hostname": "other"}', {"hostname": "other"}, PARSED),
        (ParseJsonOptions(), "plain text", {"msg": "plain text"}, UNMATCHED),
        (ParseJsonOptions(), "[1, 2]", {"msg": "[1, 2]"}, UNMATCHED),
        (ParseJsonOptions(), '{"truncated": ', {"msg": '{"truncated": '}, UNMATCHED),
        (ParseJsonOptions(), "{" * 100000, {"msg": "{" * 100000}, UNMATCHED),
        (ParseJsonOptions(), '{"user": "bad \\xff byte"}', {"msg": '{"user": "bad \\xff byte"}'}, UNMATCHED),
        (ParseJsonOptions(), '{"user": "\\u00e9t\\u00e9"}', {"user": "été"}, PARSED),
        (ParseJsonOptions(), '{"lone": "\\ud800"}', {"lone": "\\ud800"}, PARSED),
        (ParseJsonOptions(keep_original=False), '{"__time__": "1", "a": "b"}',
         {"msg": '{"__time__": "1", "a": "b"}', "a": "b", "__time__": None}, ERROR),
        (ParseJsonOptions(), '{"": "empty key"}', {"": None}, ERROR),
        (ParseRegexOptions(pattern=r"^(?P<level>[A-Z]+) (?P<method>GET|POST) (?P<path>\S+)"), "INFO GET /api/todos 12ms",
         {"level": "INFO", "method": "GET", "path": "/api/todos", "msg": "INFO GET /api/todos 12ms"}, PARSED),
        (ParseRegexOptions(pattern=r"(?P<a>x)(?P<b>y)?"), "x", {"a": "x", "b": None}, PARSED),
        (ParseRegexOptions(pattern=r"^(?P<level>[A-Z]+) "), "no match here", {"level": None}, UNMATCHED),
        (ParseKvOptions(), 'user=bob action="log in" ok=1 noise', {"user": "bob", "action": "log in", "ok": "1"}, PARSED),
        (ParseKvOptions(pair_separator=",", kv_separator=":"), "a:1,b:2", {"a": "1", "b": "2"}, PARSED),
        (ParseKvOptions(), "nothing to see", {"msg": "nothing to see"}, UNMATCHED),
    ],
)
def test_parsers(options, msg: str, expected: dict, result: str) -> None:
    kind = {ParseJsonOptions: "parse_json", ParseRegexOptions: "parse_regex", ParseKvOptions: "parse_kv"}[type(options)]
    contents, counts = run_one(kind, options, {**BASE, "msg": msg})
    assert contents is not None  # parsers never drop
    for key, value in expected.items():
        assert contents.get(key) == value, key
    assert counts == {("p", result): 1}


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("a=1 b=2", [("a", "1"), ("b", "2")]),
        ("  a=1   b=2  ", [("a", "1"), ("b", "2")]),
        ('msg="say \\"hi\\"" path=C:\\\\x', [("msg", 'say "hi"'), ("path", "C:\\\\x")]),
        ('a="x\\\\" b=2', [("a", "x\\"), ("b", "2")]),
        ('a="unterminated b=2', [("a", "unterminated b=2")]),
        ("a= b=2", [("a", ""), ("b", "2")]),
        ("=1 word a==2", [("a", "=2")]),
        ("", []),
    ],
)
def test_split_pairs(text: str, pairs: list) -> None:
    assert split_pairs(text, " ", "=", '"') == pairs


def test_chain_runs_in_order_and_stops_at_a_drop() -> None:
    configs = [
        ProcessorConfig("json", "parse_json", (), ParseJsonOptions()),
        ProcessorConfig("drop-debug", "drop", (), FilterOptions("level", equals="debug")),
        ProcessorConfig("env", "add_fields", (), AddFieldsOptions({"env": "prod"})),
    ]
    chains = build_chain_set(configs)
    chain = chains.for_tag("t")
    debug, info = {"msg": b'{"level": "debug"}'}, {"msg": b'{"level": "info"}'}
    assert chain.run(debug) is False and "env" not in debug
    assert chain.run(info) is True and info["env"] == b"prod"
    assert dict(chains.counts) == {("json", PARSED): 2, ("drop-debug", DROPPED): 1}


def test_scope_by_tag_and_the_prefix_plan() -> None:
    configs = [
        ProcessorConfig("no-cron", "drop", (), FilterOptions("app-name", equals="CRON")),
        ProcessorConfig("web-secrets", "mask", ("web_tag",), MaskOptions(presets=("password",))),
        ProcessorConfig("env", "add_fields", ("web_tag",), AddFieldsOptions({"env": "prod"})),
        ProcessorConfig("no-procid", "remove", ("web_tag",), RemoveOptions(("procid",))),
    ]
    chains = build_chain_set(configs)
    sys_chain, web_chain = chains.for_tag("sys_tag"), chains.for_tag("web_tag")
    assert sys_chain.separable and web_chain.separable
    assert [p.name for p in web_chain.prefix_group] == ["no-cron", "env", "no-procid"]
    assert [p.name for p in web_chain.msg_group] == ["web-secrets"]

    dropped = web_chain.plan_prefix(as_bytes({**BASE, "app-name": "CRON"}))
    assert dropped.head is None
    assert dropped.stage(b"password=x") is None and dropped.stage(b"y") is None
    kept = web_chain.plan_prefix(as_bytes(BASE))
    assert kept.head["env"] == b"prod" and "procid" not in kept.head
    assert kept.stage(b"login password=hunter2") == b"login password=***"
    assert kept.stage(b"nothing secret here") == b"nothing secret here"
    assert sys_chain.plan_prefix(as_bytes(BASE)) == (as_bytes(BASE), None)  # nothing to do per line: the fast path as is
    assert dict(chains.counts) == {("no-cron", DROPPED): 2, ("web-secrets", MASKED): 1}
    assert chains.describe(["sys_tag", "web_tag", None]) == [
        ("sys_tag", ["no-cron (once per line prefix)"]),
        ("web_tag", ["no-cron (once per line prefix)", "web-secrets", "env (once per line prefix)",
                     "no-procid (once per line prefix)"]),
        (None, ["no-cron"]),
    ]
    assert build_chain_set([]).for_tag("sys_tag") is None


@pytest.mark.parametrize(
    ("configs", "separable"),
    [
        ([ProcessorConfig("j", "parse_json", (), ParseJsonOptions())], False),
        ([ProcessorConfig("m", "mask", (), MaskOptions(keys=("msg", "hostname"), pattern="x"))], False),
        ([ProcessorConfig("r", "rename", (), RenameOptions({"msg": "message"}))], False),
        ([ProcessorConfig("m", "mask", (), MaskOptions(keys=("hostname",), pattern="x"))], True),
        ([ProcessorConfig("d", "drop", (), FilterOptions("msg", matches="health"))], True),
    ],
)
def test_which_chains_are_separable(configs, separable: bool) -> None:
    assert build_chain_set(configs).for_tag("t").separable is separable


def test_a_processor_that_raises_is_counted_and_the_log_goes_on() -> None:
    chains = build_chain_set([
        ProcessorConfig("boom", "mask", (), MaskOptions(pattern="x")),
        ProcessorConfig("env", "add_fields", (), AddFieldsOptions({"env": "prod"})),
    ])
    chain = chains.for_tag("t")

    def explode(log):
        raise RuntimeError("bug")

    chain.processors[0].apply = explode  # type: ignore[method-assign]
    contents = {"msg": b"x"}
    assert chain.run(contents) is True
    assert contents == {"msg": b"x", "env": b"prod"}
    assert dict(chains.counts) == {("boom", ERROR): 1}


def test_patterns_are_linear_time_and_refuse_what_re2_cannot_do() -> None:
    evil = compile_pattern(r"(a+)+b")
    assert evil.search(b"a" * 100_000) is None  # Python's re would backtrack for hours
    for pattern in (r"(a)\1", r"(?<=a)b", r"(?=x)", "("):
        with pytest.raises(PatternError, match="RE2"):
            compile_pattern(pattern)


@pytest.mark.parametrize(
    ("kind", "options", "problem"),
    [
        ("drop", FilterOptions("k"), "give exactly one of equals, matches, present (got none)"),
        ("drop", FilterOptions("k", equals="a", matches="b"), "(got equals, matches)"),
        ("drop", FilterOptions("k", matches="(a)\\1"), "matches: not a pattern RE2 accepts"),
        ("mask", MaskOptions(), "give a pattern or presets"),
        ("mask", MaskOptions(presets=("ssn",)), "presets[0]: unknown preset 'ssn'"),
        ("mask", MaskOptions(pattern="(?<=a)b"), "pattern: not a pattern RE2 accepts"),
        ("add_fields", AddFieldsOptions({"__topic__": "x"}), "fields[0]: must not begin with '__'"),
        ("rename", RenameOptions({"a": ""}), "fields[0]: must not be empty"),
        ("remove", RemoveOptions(()), "keys: must name at least one key"),
        ("parse_json", ParseJsonOptions(on_conflict="merge"), "on_conflict: must be one of skip, overwrite"),
        ("parse_json", ParseJsonOptions(prefix="__"), "prefix: must not begin with '__'"),
        ("parse_regex", ParseRegexOptions(pattern=r"(\w+)"), "pattern: needs at least one named group"),
        ("parse_kv", ParseKvOptions(kv_separator="=="), "kv_separator: must be one character"),
        ("parse_kv", ParseKvOptions(pair_separator="="), "must differ"),
        ("multiline", MultilineOptions(), "give a preset or a continuation pattern"),
        ("multiline", MultilineOptions(preset="java", continuation="^x"), "give a preset or a continuation"),
        ("multiline", MultilineOptions(preset="ruby"), "preset: unknown preset 'ruby'; known: java, python, go"),
        ("multiline", MultilineOptions(continuation="(a"), "continuation: not a pattern RE2 accepts"),
        ("multiline", MultilineOptions(preset="go", start="^x"), "start: needs a continuation pattern too"),
        ("multiline", MultilineOptions(preset="java", max_lines=1), "max_lines: must be at least 2"),
        ("multiline", MultilineOptions(preset="java", flush_ms=0), "flush_ms: must be at least 1"),
    ],
)
def test_option_problems(kind: str, options, problem: str) -> None:
    assert isinstance(options, OPTIONS_BY_TYPE[kind])
    problems = options.problems("processors[0].")
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("size", [100, 20_000])  # below and above the size where the chunk test changes method
def test_the_chunk_word_test_finds_every_preset_word_in_any_case(size: int) -> None:
    words = sorted({word for preset in MASK_PRESETS.values() for word in preset.words})
    holds_any = any_word_finder(words)
    assert holds_any is not None and any_word_finder([]) is None
    filler = (b"GET /index.html 200 ok\n" * (size // 23 + 1))[:size]
    assert not holds_any(filler)
    for word in words:
        mixed = bytes(c if i % 2 else c ^ 0x20 if 97 <= c <= 122 else c for i, c in enumerate(word))
        for variant in (word, word.upper(), mixed):
            assert holds_any(filler + variant), variant
            assert holds_any(variant + filler), variant
            assert holds_any(filler[: size // 2] + variant + filler[size // 2:]), variant
