"""packaging/terraform/: the logstore index covers exactly the keys the agent ships.

SLS searches only indexed keys: ``app-name: todo-list`` finds nothing without a field index on
app-name. So the index that ``logstore_index.tf`` creates must list every key slsfwd ships and
no other. The agent's keys are taken from its own code, so the two cannot drift apart: the
content keys from ``agent/parse.py``'s constants (checked against what the real transformer
writes for every kind of line), the tags from the agent's own wiring (``agent/app.py``). The
Terraform is read with python-hcl2, a parser of the HCL2 language.
"""

from __future__ import annotations

import time
from pathlib import Path

import hcl2
import pytest
from aliyun.log.proto import LogGroupRaw

from agent.config import loads
from agent.pipeline.batch import Batch, Batcher, Destination, Ticket
from agent.pipeline.parse import (
    BUILTIN_0_1_FIELDS,
    MAX_PAST_S,
    MSG_KEY,
    MULTILINE_LINES_KEY,
    ORIGINAL_TIME_KEY,
    PARSE_ERROR_KEY,
    build_format_table,
)
from agent.pipeline.join import Joiner
from agent.pipeline.processors import ProcessorConfig, build_chain_set
from agent.pipeline.processors.options import MultilineOptions
from agent.pipeline.transform import LineTransformer, Router
from tests.support import REPO, shared_data

TERRAFORM = REPO / "packaging" / "terraform"
FIELD_TYPES = {"text", "long", "double", "json"}  # alicloud_log_store_index field_search.type
CONTENT_KEYS = {*BUILTIN_0_1_FIELDS, MSG_KEY, ORIGINAL_TIME_KEY, PARSE_ERROR_KEY, MULTILINE_LINES_KEY}


def load(name: str) -> dict:
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    with open(TERRAFORM / name, encoding="utf-8") as f:
        return hcl2.load(f, serialization_options=options)


def blocks(parsed: dict, kind: str) -> dict:
    """``resource``, ``variable``, ``locals``... merged into one dict (python-hcl2 gives a list)."""
    merged: dict = {}
    for block in parsed.get(kind, []):
        merged.update(block)
    return merged


def index_resource() -> dict:
    return blocks(load("logstore_index.tf"), "resource")["alicloud_log_store_index"]["slsfwd"]


def indexed_fields() -> dict[str, str]:
    return blocks(load("logstore_index.tf"), "locals")["slsfwd_fields"]


# ---------------------------------------------------------------- what the agent ships


def transformed_keys(lines: list[bytes], now: int) -> set[str]:
    """Every content key the real transformer writes for ``lines``, with a multiline processor
    (the only processor whose key is the agent's own)."""
    closed: list[Batch] = []
    batcher = Batcher(max_logs=4096, max_bytes=512 * 1024, linger=2.0, on_close=closed.append, clock=lambda: now)
    joiner = Joiner(batcher, lambda: now)
    transformer = LineTransformer(
        formats=build_format_table({}), router=Router(Destination("p", "ls", ""), {}),
        host_ip="10.0.0.1", batcher=batcher, clock=lambda: now, joiner=joiner,
        processors=build_chain_set([ProcessorConfig("traces", "multiline", (), MultilineOptions(preset="java"))]),
    )
    transformer.process(b"".join(line + b"\n" for line in lines), now, "127.0.0.1", Ticket(0, lambda _seq: None))
    joiner.flush_all()
    batcher.close_all()
    keys = set()
    for batch in closed:
        group = LogGroupRaw()
        group.ParseFromString(b"".join(batch.logs))
        keys |= {content.Key for log in group.Logs for content in log.Contents}
    return keys


def test_the_transformer_writes_exactly_the_content_keys_of_the_parse_module() -> None:
    now = int(time.time())
    lines = [
        b"0.1 sys_tag %d 127.0.0.1 web-1 user.notice 0 todo-list 42 -  fine" % now,
        b"0.1 sys_tag %d 127.0.0.1 web-1 user.err 0 todo-list 42 -  #011at com.example.A.b(A.java:1)" % now,
        b"0.1 sys_tag %d 127.0.0.1 web-1 user.notice 0 todo-list 42 -  too old for SLS" % (now - MAX_PAST_S - 86400),
        b"9.9 sys_tag %d 127.0.0.1 an unknown version" % now,
        b"0.1 sys_tag %d 127.0.0.1 too few" % now,
        b"0.1 sys_tag yesterday 127.0.0.1 web-1 user.notice 0 todo-list 42 -  bad timestamp",
        *shared_data.sample_lines(),  # what rsyslog really sends, odd lines included
    ]
    assert transformed_keys(lines, now) == CONTENT_KEYS


def shipped_tag_keys(tmp_path: Path) -> set[str]:
    """The LogGroup tags the agent's own wiring gives every batch, as SLS names them."""
    from agent.app import Agent

    config = loads(f'[spool]\ntype = "memory"\ndir = "{tmp_path}"\n', env={})
    return {f"__tag__:{key}" for key, _value in Agent(config).shipper.tags}


def test_the_index_lists_exactly_the_keys_the_agent_ships(tmp_path: Path) -> None:
    tags = shipped_tag_keys(tmp_path)
    assert tags == {"__tag__:__hostname__"}  # the tutorial's __tag__:__hostname__ query
    assert set(indexed_fields()) == CONTENT_KEYS | tags


# ---------------------------------------------------------------- the index itself


def test_every_logstore_the_agent_writes_to_gets_the_index() -> None:
    resource = index_resource()
    assert resource["for_each"] == "${local.slsfwd_logstores}"
    assert resource["project"] == "${var.sls_project}" and resource["logstore"] == "${each.value}"
    assert blocks(load("logstore_index.tf"), "locals")["slsfwd_logstores"] == (
        "${toset(concat([var.sls_logstore], var.routed_logstores))}")
    routed = blocks(load("ram_role.tf"), "variable")["routed_logstores"]
    assert routed["type"] == "${list(string)}" and routed["default"] == []


def test_every_shipped_key_has_a_field_index_of_its_own() -> None:
    resource = index_resource()
    (dynamic,) = resource["dynamic"]
    field = dynamic["field_search"]
    assert field["for_each"] == "${merge(var.extra_index_fields, local.slsfwd_fields)}"  # slsfwd's own win
    extra = blocks(load("logstore_index.tf"), "variable")["extra_index_fields"]
    assert extra["type"] == "${map(string)}" and extra["default"] == {}
    (content,) = field["content"]
    assert content["name"] == "${field_search.key}" and content["type"] == "${field_search.value}"
    assert content["enable_analytics"] is True
    assert content["token"] == '${field_search.value == "text" ? local.sls_token : null}'
    assert set(indexed_fields().values()) <= FIELD_TYPES
    assert indexed_fields()[ORIGINAL_TIME_KEY] == "long"  # a unix time: range queries
    assert indexed_fields()[MULTILINE_LINES_KEY] == "long"  # a count


def test_full_text_index_with_the_console_s_delimiters() -> None:
    (full_text,) = index_resource()["full_text"]
    assert full_text == {"case_sensitive": False, "token": "${local.sls_token}"}
    token = blocks(load("logstore_index.tf"), "locals")["sls_token"]
    assert set(token) == set(", '\";=()[]{}?@&<>/:\n\t\r")
    assert "-" not in token and "." not in token  # app-name: todo-list matches the whole value


def test_the_role_may_write_to_every_indexed_logstore() -> None:
    policy = blocks(load("ram_role.tf"), "resource")["alicloud_ram_policy"]["slsfwd_put_logs"]["policy_document"]
    assert ("Resource = [for logstore in concat([var.sls_logstore], var.routed_logstores) : "
            '"acs:log:*:*:project/${var.sls_project}/logstore/${logstore}"]') in policy
    assert 'Action = ["log:PostLogStoreLogs"]' in policy


@pytest.mark.parametrize("name", sorted(p.name for p in TERRAFORM.glob("*.tf")))
def test_every_terraform_file_parses(name: str) -> None:
    assert load(name)
