"""Names, references, method inference and checksums of registry entries."""

from __future__ import annotations

import pytest

from adapterhub.errors import IntegrityError, InvalidAdapterError, InvalidNameError
from adapterhub.methods import method_from_config
from adapterhub.registry.manifest import check_file, file_entry
from adapterhub.registry.refs import parse_ref, validate_tag


@pytest.mark.parametrize("ref, expected", [
    ("legal", ("legal", "latest")), ("legal@latest", ("legal", "latest")), ("legal@3", ("legal", 3)),
    ("legal@prod", ("legal", "prod")), ("fin.v2_b-1@12", ("fin.v2_b-1", 12)),
])
def test_parse_ref(ref, expected):
    assert parse_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", "@1", "legal@", "legal@0", "legal@-2", "legal@a b", "le gal", "a/b", "..", 3])
def test_parse_ref_refuses(ref):
    with pytest.raises(InvalidNameError):
        parse_ref(ref)


@pytest.mark.parametrize("tag", ["12", "latest", "", "a/b"])
def test_reserved_or_malformed_tags(tag):
    with pytest.raises(InvalidNameError):
        validate_tag(tag)


@pytest.mark.parametrize("config, method", [
    ({"peft_type": "LORA"}, "lora"),
    ({"peft_type": "LORA", "use_dora": True}, "lora"),
    ({"peft_type": "LORA", "use_rslora": True}, "lora"),
    ({"peft_type": "PREFIX_TUNING"}, "prefix"),
    ({"peft_type": "PROMPT_TUNING"}, None),
    ({"peft_type": "IA3"}, "ia3"),
    ({"peft_type": "ADALORA"}, "adalora"),
    ({"peft_type": "ADAPTERHUB_BOTTLENECK"}, "bottleneck"),
    ({"peft_type": "VERA"}, None),
    ({}, None),
])
def test_method_from_peft_type(config, method):
    if method is None:
        with pytest.raises(InvalidAdapterError, match="unsupported method"):
            method_from_config(config)
    else:
        assert method_from_config(config) == method


@pytest.mark.parametrize("data, message", [(b"hello!", None), (b"hello", "5 bytes but 6"), (b"hellO!", "sha256")])
def test_check_file(data, message):
    entry = file_entry(b"hello!")
    if message is None:
        check_file(data, entry, where="/x/f", ref="a@1")
    else:
        with pytest.raises(IntegrityError, match=message):
            check_file(data, entry, where="/x/f", ref="a@1")
