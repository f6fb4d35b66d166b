"""A registry of 10,000 entries: built in the test (``add_many``, tiny adapters), then listed with every filter
and paged, through Python and ``adapterhub registry list`` (human and --json), and found again by ``rebuild-index``.

Speed is measured by ``adapterhub bench --only many`` (its ``registry`` part), never asserted here.
"""

from __future__ import annotations

import json

import pytest

from adapterhub.cli import main
from adapterhub.errors import ConfigError, InvalidNameError
from adapterhub.registry import Registry
from adapterhub.registry import NewEntry

ENTRIES = 10_000
DOMAINS = ("legal", "finance", "medical", "retail", "support")
PREFIX_EVERY = 50  # every 50th entry is a prefix adapter (the method filter)
PROD_EVERY = 100  # every 100th entry is tagged prod
UNBASED = 10  # the last few are added without a base (no fingerprint: the base filter leaves them out)


def entry_name(i: int) -> str:
    return f"{DOMAINS[i % len(DOMAINS)]}-{i:05d}"


@pytest.fixture(scope="module")
def big(tmp_path_factory, tiny_base, lora_dir, prefix_dir):
    """``(registry, every record as added)``: 10,000 entries over 5 domains, 2 methods, a tag, 2 bases."""
    registry = Registry(tmp_path_factory.mktemp("big") / "registry")

    def new(i: int) -> NewEntry:
        return NewEntry(prefix_dir if i % PREFIX_EVERY == 0 else lora_dir, entry_name(i),
                        domain=DOMAINS[i % len(DOMAINS)], tags=("prod",) if i % PROD_EVERY == 0 else ())

    cut = ENTRIES - UNBASED
    records = registry.add_many([new(i) for i in range(cut)], base=tiny_base, batch=1000)
    records += registry.add_many([new(i) for i in range(cut, ENTRIES)])
    return registry, records


def refs(records):
    return [record.ref for record in records]


def expected(records, *, prefix=None, domain=None, tag=None, base=None, method=None):
    """The filter done by hand over every record: the truth the index's answer must equal."""
    return sorted((r for r in records if (prefix is None or r.name.startswith(prefix))
                   and (domain is None or r.domain == domain) and (tag is None or tag in r.tags)
                   and (base is None or (r.base_fingerprint or "").startswith(base))
                   and (method is None or r.method == method)), key=lambda r: (r.name, r.version))


def test_every_entry_is_added_once_in_order(big):
    registry, records = big
    assert registry.count() == ENTRIES == len(records)
    assert refs(records) == [f"{entry_name(i)}@1" for i in range(ENTRIES)]
    assert refs(registry.list()) == refs(expected(records))


@pytest.mark.parametrize("filters", [
    {"domain": "legal"}, {"tag": "prod"}, {"method": "prefix"}, {"prefix": "retail-01"},
    {"prefix": "medical-0990", "method": "lora"}, {"domain": "finance", "tag": "prod", "method": "prefix"},
    {"base": "FULL"}, {"base": "SHORT", "domain": "support"}, {"prefix": "nobody"},
])
def test_each_filter_equals_the_same_filter_done_by_hand(big, tiny_base, filters):
    registry, records = big
    if filters.get("base") == "FULL":
        filters = {**filters, "base": tiny_base.fingerprint}
    elif filters.get("base") == "SHORT":
        filters = {**filters, "base": tiny_base.fingerprint[:12]}
    truth = expected(records, **filters)
    query = {("name_prefix" if key == "prefix" else key): value for key, value in filters.items()}
    assert refs(registry.list(**query)) == refs(truth)
    assert registry.count(**query) == len(truth)


def test_the_base_filter_leaves_out_entries_without_a_fingerprint(big, tiny_base):
    registry, _ = big
    assert registry.count(base=tiny_base.fingerprint) == ENTRIES - UNBASED


def test_pages_of_50_cover_a_filter_exactly_once(big):
    registry, records = big
    truth = refs(expected(records, domain="medical"))
    pages = [refs(registry.list(domain="medical", limit=50, offset=offset)) for offset in range(0, len(truth), 50)]
    assert all(len(page) == 50 for page in pages[:-1]) and 0 < len(pages[-1]) <= 50
    assert [ref for page in pages for ref in page] == truth
    assert registry.list(domain="medical", limit=50, offset=len(truth)) == []


def test_a_page_carries_its_entries_tags(big):
    registry, _ = big
    page = registry.list(tag="prod", limit=5, offset=3)
    assert [record.tags for record in page] == [("prod",)] * 5
    assert [record.name for record in page] == sorted(entry_name(i) for i in range(0, ENTRIES, PROD_EVERY))[3:8]


def test_get_show_and_refs_resolve_among_ten_thousand(big, capsys):
    registry, _ = big
    name = entry_name(4200)
    assert registry.get(name).ref == registry.get(f"{name}@latest").ref == registry.get(f"{name}@prod").ref == \
        f"{name}@1"
    assert main(["registry", "show", f"{name}@prod", "--registry", str(registry.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ref"] == f"{name}@1"
    assert registry.load(f"{name}@1").record.method == "prefix"  # 4200 is a multiple of PREFIX_EVERY


def test_cli_list_pages_human_and_json(big, capsys):
    registry, records = big
    truth = refs(expected(records, domain="legal", method="lora"))
    argv = ["registry", "list", "--registry", str(registry.root), "--domain", "legal", "--method", "lora",
            "--limit", "50", "--offset", "50"]
    assert main([*argv, "--json"]) == 0
    assert [row["ref"] for row in json.loads(capsys.readouterr().out)] == truth[50:100]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert truth[50] in out and truth[99] in out and truth[100] not in out and truth[49] not in out
    assert (f"51-100 of {len(truth)} entries matching domain 'legal', method 'lora'; next page: --offset 100"
            in out)


def test_cli_list_filters_by_name_prefix_and_tag(big, capsys):
    registry, records = big
    assert main(["registry", "list", "--registry", str(registry.root), "--name", "legal-0", "--tag", "prod",
                 "--json"]) == 0
    assert [row["ref"] for row in json.loads(capsys.readouterr().out)] == refs(
        expected(records, prefix="legal-0", tag="prod"))


def test_rebuild_index_finds_exactly_the_same_registry(big):
    registry, _ = big
    before = [(r.ref, r.tags, r.domain, r.method, r.base_fingerprint) for r in registry.list()]
    (registry.root / "index.sqlite").unlink()
    for companion in ("index.sqlite-wal", "index.sqlite-shm"):
        (registry.root / companion).unlink(missing_ok=True)
    report = Registry(registry.root).rebuild_index()
    assert report.problems == [] and len(report.indexed) == ENTRIES
    after = [(r.ref, r.tags, r.domain, r.method, r.base_fingerprint) for r in Registry(registry.root).list()]
    assert after == before


@pytest.mark.parametrize("query, error", [
    ({"limit": 0}, ConfigError), ({"offset": -1}, ConfigError), ({"method": "qlora"}, ConfigError),
    ({"name_prefix": "a b"}, InvalidNameError), ({"tag": "latest"}, InvalidNameError), ({"base": " "}, ConfigError),
])
def test_a_bad_filter_is_one_clear_error(tmp_path, query, error):
    with pytest.raises(error, match="|".join(("limit", "offset", "method", "prefix", "tag", "base"))):
        Registry(tmp_path / "registry").list(**query)


def test_cli_bad_filter_is_one_line(tmp_path, capsys):
    assert main(["registry", "list", "--registry", str(tmp_path / "r"), "--method", "qlora"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown method 'qlora'") and "Traceback" not in err


def test_add_many_checks_every_name_before_writing(tmp_path, lora_dir):
    registry = Registry(tmp_path / "registry")
    with pytest.raises(InvalidNameError, match="bad name"):
        registry.add_many([NewEntry(lora_dir, "fine"), NewEntry(lora_dir, "bad name")])
    assert registry.count() == 0


def test_add_many_keeps_earlier_batches_and_says_so(tmp_path, lora_dir):
    registry = Registry(tmp_path / "registry")
    with pytest.raises(Exception, match=r"the first 2 entries, up to b@1, were registered") as caught:
        registry.add_many([NewEntry(lora_dir, "a"), NewEntry(lora_dir, "b"), NewEntry(tmp_path / "missing", "c")],
                          batch=2)
    assert "does not exist" in str(caught.value)
    assert refs(registry.list()) == ["a@1", "b@1"] and registry.verify() == []


def test_add_many_is_all_or_nothing_within_a_batch(tmp_path, lora_dir):
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "Legal")
    with pytest.raises(InvalidNameError, match="differs only in case"):
        registry.add_many([NewEntry(lora_dir, "fine"), NewEntry(lora_dir, "legal")])
    assert refs(registry.list()) == ["Legal@1"] and registry.gc() == []
