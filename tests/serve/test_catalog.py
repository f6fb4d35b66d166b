"""The console's catalogue over a real registry: one row per adapter judged by its newest version, text search,
a key's allow list before counting and paging, and the filter menus."""

from __future__ import annotations

import pytest

from adapterhub.errors import ConfigError
from adapterhub.serve.catalog import Filters, catalog_page


@pytest.fixture(scope="module")
def registry(tiny_base, tmp_path_factory):
    from adapterhub import Registry
    from adapterhub.runtime.testing import make_random_adapters

    folders = make_random_adapters(tiny_base, tmp_path_factory.mktemp("catalog-adapters"), count=2, r=2, prefix="cat")
    registry = Registry(tmp_path_factory.mktemp("catalog-registry"))
    registry.add(folders[0], "legal", domain="legal", base=tiny_base, tags=["prod"], description="Contract clauses")
    registry.add(folders[1], "legal", domain="contracts", base=tiny_base)  # the newest version moved domain
    registry.add(folders[0], "finance", domain="finance", base=tiny_base, description="Sentiment of NEWS")
    for i in range(5):
        registry.add(folders[1], f"support-{i}", domain="support", base=tiny_base)
    return registry


def names(page):
    return [row["name"] for row in page["data"]]


def test_one_row_per_adapter_judged_by_its_newest_version(registry):
    page = catalog_page(registry, limit=3)
    assert page["total"] == 7 and names(page) == ["finance", "legal", "support-0"]
    legal = page["data"][1]
    assert (legal["latest"], legal["versions"], legal["domain"], legal["tags"]) == (2, 2, "contracts", ["prod"])
    assert names(catalog_page(registry, Filters(domain="legal"))) == []  # legal@2 is no longer in that domain
    assert names(catalog_page(registry, Filters(tag="prod"))) == ["legal"]  # a tag any version carries


def test_text_search_reads_names_and_descriptions_in_any_case(registry):
    assert names(catalog_page(registry, Filters(query="news"))) == ["finance"]
    assert names(catalog_page(registry, Filters(query="PORT-3"))) == ["support-3"]


def test_pages_and_totals(registry):
    page = catalog_page(registry, Filters(domain="support"), limit=2, offset=4)
    assert page["total"] == 5 and names(page) == ["support-4"]
    assert catalog_page(registry, limit=10_000)["limit"] == 200  # a page is bounded


def test_an_allow_list_narrows_everything_before_counting(registry):
    page = catalog_page(registry, names=["finance", "support-1"])
    assert page["total"] == 2 and names(page) == ["finance", "support-1"]
    assert page["facets"] == {"domains": ["finance", "support"], "methods": ["lora"], "tags": []}
    assert catalog_page(registry, names=[])["total"] == 0


def test_the_filter_menus_list_what_is_in_use(registry):
    facets = catalog_page(registry)["facets"]
    assert facets["domains"] == ["contracts", "finance", "legal", "support"] and facets["tags"] == ["prod"]


def test_a_malformed_filter_is_one_clear_error(registry):
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        catalog_page(registry, Filters(method="nope"))
