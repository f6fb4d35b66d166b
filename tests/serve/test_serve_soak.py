"""A short soak (issue 32): well-behaved streaming clients beside an attacker cycling every bad input; none of the
well-behaved requests fails and no attack gets a 500. The 60-second version with its figures is
``python -m adapterhub.bench.soak`` (see the issue's closing note)."""

from __future__ import annotations

import asyncio

import pytest

from adapterhub.bench.soak import run_soak
from tests.helpers.serving import start_server


@pytest.mark.reliability
def test_well_behaved_clients_never_fail_beside_an_attacker(tiny_base, serve_registry):
    hub, srv = start_server(tiny_base, serve_registry, base_name="base", header_timeout_s=1.0)
    try:
        result = asyncio.run(run_soak(srv.url, seconds=4, clients=8, warmup=1, slowloris=5))
    finally:
        srv.stop()
        hub.close()
    assert result["well_behaved"]["failed"] == 0 and result["well_behaved"]["ok"] > 0, result["well_behaved"]
    assert result["attack_internal_errors"] == 0, result["attacks"]
    refused = {name: set(seen) for name, seen in result["attacks"].items()}
    assert refused["huge_prompt"] == {"400"} and refused["chunked_10mib"] == {"413"}, refused
    assert refused["text_plain"] == {"415"} and refused["foreign_host"] == {"421"}, refused
    assert refused["version_spelling"] == {"200"} and refused["distinct_mixes"] == {"200"}, refused
    assert {name for name, seen in refused.items() if seen == {"400"}} >= {
        "tiny_temperature", "tiny_top_p", "huge_seed", "lorax_seed", "lorax_temperature", "overflowing_mix",
        "deep_json", "lone_surrogate", "bad_lora_name", "classify_20000", "classify_heavy_mix", "probe_paths"}, refused
    assert len({info.name for info in hub.resident()}) <= 4  # every spelling of legal@1 shared one copy
