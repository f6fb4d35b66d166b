"""Constrained decoding with the real grammar engine (llguidance) on the tiny llama: every row keeps its own
grammar state in one batch beside free rows, LoRA rows and prefix-tuned rows; hostile schemas are bounded;
adapters' contracts fill in what a call leaves out."""

from __future__ import annotations

import json
import logging

import jsonschema
import pytest
from pydantic import BaseModel, Field

from adapterhub import AdapterHub, Registry
from adapterhub.errors import ConfigError, ContractError, SchemaError
from adapterhub.registry.contract import set_contract
from adapterhub.grammar import MAX_SCHEMA_BYTES, Grammars
from adapterhub.runtime.testing import make_random_adapters
from tests.helpers.schemas import FLAG, PICK


class Verdict(BaseModel):
    ok: bool
    score: int = Field(ge=0, le=9)


@pytest.fixture(scope="module")
def registry(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("structured")
    lora = make_random_adapters(tiny_base, root, count=2, r=4, prefix="lora", seed=3)
    prefix = make_random_adapters(tiny_base, root, method="prefix", num_virtual_tokens=4, prefix="pre")
    registry = Registry(tmp_path_factory.mktemp("structured-registry"))
    registry.add(lora[0], "legal", base=tiny_base)
    registry.add(lora[1], "finance", base=tiny_base,
                 task={"type": "classification", "labels": ["up", "down"], "prompt_template": "{text}"})
    registry.add(prefix[0], "medical", base=tiny_base)
    return registry


@pytest.fixture(scope="module")
def hub(tiny_base, registry):
    with AdapterHub(tiny_base, registry=registry) as hub:
        yield hub


PROMPTS = ["Patient reports chest pain", "Revenue fell", "The clause is void", "hello", "What is x?", "ok"]


def test_mixed_batch_every_schema_row_valid_and_free_rows_untouched(hub):
    """Schema rows (two schemas) beside free rows, over a LoRA, a prefix adapter and the bare base, one batch."""
    domains = ["legal", "medical", None, "legal", "medical", None]
    schemas = [PICK, FLAG, PICK, None, None, FLAG]
    rows = hub.generate_rows(PROMPTS, domains=domains, max_new_tokens=24, schema=None)  # free reference
    free_alone = [row.text for row in rows]
    stepper = hub.stepper()
    from adapterhub.runtime import constrained
    from adapterhub.runtime.sampling import Sampler

    with hub.residency.pinned(domains) as entries:
        batch_rows = [constrained.Row(prompt=stepper.encode(text, entry), entry=entry, max_new_tokens=24,
                                      sampler=Sampler() if schema is None else
                                      constrained.ConstrainedSampler(Sampler(), hub.grammars.state(schema)))
                      for text, entry, schema in zip(PROMPTS, entries, schemas)]
        mixed = constrained.generate_rows(stepper, batch_rows)
    for row, schema, alone in zip(mixed, schemas, free_alone):
        if schema is None:
            assert row.text == alone  # a free row is exactly what it is without its neighbours' grammars
        else:
            assert row.finish in ("stop", "eos")
            jsonschema.validate(json.loads(row.text), schema)
            assert row.text.endswith("}")
    # each schema row equals that row constrained alone: the masks are per row
    for index in (0, 1, 5):
        alone = hub.generate(PROMPTS[index], domain=domains[index], schema=schemas[index], max_new_tokens=24)
        assert mixed[index].text == alone


def test_generate_and_extract_with_a_pydantic_model(hub):
    texts = hub.generate(PROMPTS[:3], domains=["legal", "medical", None], schema=Verdict, max_new_tokens=24)
    for text in texts:
        Verdict.model_validate_json(text)
    found = hub.extract(PROMPTS[:3], domains=["legal", "medical", None], schema=Verdict, max_new_tokens=24)
    assert all(isinstance(item, Verdict) for item in found)
    assert hub.extract("hi", domain="legal", schema=PICK, max_new_tokens=24) == json.loads(
        hub.generate("hi", domain="legal", schema=PICK, max_new_tokens=24))
    assert hub.generate("hi", domain="legal", schema="json_object", max_new_tokens=40).startswith("{")


def test_too_few_tokens_finish_length_and_extract_refuses(hub):
    rows = hub.generate_rows(["hi"], domain="legal", schema=PICK, max_new_tokens=3)
    assert rows[0].finish == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(rows[0].text)
    with pytest.raises(ConfigError, match="max_new_tokens=3 before its JSON closed"):
        hub.extract("hi", domain="legal", schema=PICK, max_new_tokens=3)


def test_sampled_rows_stay_valid(hub):
    for seed in range(4):
        text = hub.generate("hi", domain="legal", schema=FLAG, max_new_tokens=24, do_sample=True, temperature=1.5,
                            seed=seed)
        jsonschema.validate(json.loads(text), FLAG)


@pytest.mark.parametrize("schema, feature", [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
    ({"not": {"type": "string"}}, "not"),
    ({"$ref": "#/$defs/missing"}, "missing"),
])
def test_unsupported_feature_is_one_clear_error(hub, schema, feature):
    with pytest.raises(SchemaError, match=feature):
        hub.generate("hi", domain="legal", schema=schema, max_new_tokens=4)


def _deep(levels):
    schema = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


def test_hostile_schemas_are_refused_or_bounded(hub):
    grammars = Grammars(hub.tokenizer, vocab_size=hub.grammars.vocab_size)
    with pytest.raises(SchemaError, match="nests more than"):
        grammars.compile(_deep(200))
    with pytest.raises(SchemaError, match="KiB"):
        grammars.compile({"enum": [f"value-{i}" for i in range(MAX_SCHEMA_BYTES // 4)]})
    assert len(grammars) == 0  # nothing half-compiled is kept
    big_enum = {"type": "object", "properties": {"k": {"enum": [f"v{i}" for i in range(3000)]}}, "required": ["k"]}
    jsonschema.validate(json.loads(hub.generate("hi", domain="legal", schema=big_enum, max_new_tokens=16)), big_enum)
    recursive = {"$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {
        "$ref": "#/$defs/node"}, "maxItems": 2}}, "required": ["kids"], "additionalProperties": False}},
        "$ref": "#/$defs/node"}
    row = hub.generate_rows(["hi"], domain="legal", schema=recursive, max_new_tokens=40)[0]
    assert len(row.tokens) <= 40  # the token limit bounds an endless recursion
    if row.finish != "length":
        jsonschema.validate(json.loads(row.text), recursive)


def test_compile_is_cached_per_schema(hub):
    grammars = Grammars(hub.tokenizer)
    first = grammars.compile(PICK)
    again = grammars.compile(json.loads(json.dumps(PICK, sort_keys=False)))
    assert again is first and len(grammars) == 1
    assert grammars.compile(FLAG) is not first and len(grammars) == 2


# --- contracts ---------------------------------------------------------------------------------------------
@pytest.fixture
def contracted(tiny_base, registry, tmp_path):
    """A copy of the registry where legal@2 carries a contract (legal@1 stays as it was)."""
    copy = Registry(tmp_path / "registry")
    copy.add(registry.export("legal", tmp_path / "legal"), "legal", base=tiny_base)
    copy.add(registry.export("finance", tmp_path / "finance"), "finance", base=tiny_base)
    set_contract(copy, "legal@1", {"temperature": 0, "max_tokens": 20, "schema": FLAG,
                                   "evaluated_on": {"none": {"accuracy": 0.9}}})
    return copy


def test_contract_defaults_apply_where_the_call_is_silent_and_yield_to_it(tiny_base, contracted):
    with AdapterHub(tiny_base, registry=contracted) as hub:
        silent = hub.generate_rows(["hi"], domain="legal@2")[0]
        assert silent.max_new_tokens == 20
        jsonschema.validate(json.loads(silent.text), FLAG)
        assert hub.generate("hi", domain="legal@2") == silent.text
        jsonschema.validate(json.loads(hub.generate("hi", domain="legal@2", schema=PICK)), PICK)  # overridden
        free = hub.generate_rows(["hi"], domain="legal@2", schema="text", max_new_tokens=5)[0]
        assert len(free.tokens) <= 5 and free.sampler.__class__.__name__ == "Sampler"
        assert hub.generate("hi", domain="legal@1", max_new_tokens=6) == hub.generate(
            "hi", domain="legal@2", schema="text", max_new_tokens=6)  # same weights, no contract on @1


def test_schema_for_a_classifier_contradicts_it(tiny_base, contracted):
    with AdapterHub(tiny_base, registry=contracted) as hub:
        with pytest.raises(ContractError, match="classification adapter"):
            hub.generate("Revenue fell", domain="finance", schema=FLAG)


def test_unevaluated_quantisation_warns_once_and_strict_refuses(tiny_base, contracted, caplog):
    set_contract(contracted, "legal@2", {"evaluated_on": None})
    set_contract(contracted, "legal@3", {"evaluated_on": {"nf4": {"accuracy": 0.8}}})
    with AdapterHub(tiny_base, registry=contracted) as hub:
        with caplog.at_level(logging.WARNING, logger="adapterhub.contracts"):
            hub.generate("hi", domain="legal@4", max_new_tokens=4)
            hub.generate("hi", domain="legal@4", max_new_tokens=4)
        warnings = [r for r in caplog.records if "never on none" in r.getMessage()]
        assert len(warnings) == 1
        hub.contracts.strict = True
        with pytest.raises(ContractError, match="evaluated on base quantisation"):
            hub.generate("hi", domain="legal@4", max_new_tokens=4)
        hub.generate("hi", domain="legal@3", max_new_tokens=4)  # no quantisations recorded: nothing to refuse
