"""Channels: gated promotion, history beside the manifests, rollback, canaries, concurrency and SIGKILL safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapterhub.errors import ConfigError, PromotionRefusedError
from adapterhub.registry import Registry
from adapterhub.registry.gates import parse_gate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base, tmp_path_factory):
    from adapterhub.runtime.testing import make_random_adapters

    return make_random_adapters(tiny_base, tmp_path_factory.mktemp("channel-adapters"), count=3, r=2)


@pytest.fixture
def registry(tmp_path, adapter_dirs, tiny_base):
    registry = Registry(tmp_path / "registry")
    for folder in adapter_dirs:
        registry.add(folder, "finance", base=tiny_base)
    return registry


def scores(table):
    """An evaluator answering from ``{version: accuracy}`` (the serving evaluator is tested in serve/)."""
    return lambda ref, data: {"accuracy": table[int(ref.split("@")[1])], "loss": 1 - table[int(ref.split("@")[1])]}


def test_gates_parse_safely_and_name_both_figures():
    gate = parse_gate("accuracy >= prod - 0.5 and loss <= holder.loss * 1.1", channel="prod")
    checks = gate.check({"accuracy": 0.90, "loss": 0.2}, {"accuracy": 0.91, "loss": 0.1})
    assert [check.passed for check in checks] == [False, False]
    assert checks[0].describe() == "accuracy >= prod - 0.5: 90 >= 90.5 (candidate 90, holder 91)"
    assert all(check.passed for check in gate.check({"accuracy": 0.5, "loss": 9}, None))  # no holder yet
    for bad in ("__import__('os').system('x') > 1", "accuracy", "a >= b >= c", "accuracy >= (prod", "prod.x.y > 1"):
        with pytest.raises(ConfigError):
            parse_gate(bad, channel="prod")
    with pytest.raises(ConfigError, match="did not report"):
        parse_gate("json_valid >= 99", channel="prod").check({"accuracy": 1.0}, None)


def test_promote_then_a_failing_gate_changes_nothing(registry):
    evaluate = scores({1: 0.80, 2: 0.90, 3: 0.85})
    first = registry.promote("finance@1", channel="prod", evaluate=evaluate, who="alice")
    assert first.row.to_version == 1 and registry.get("finance@prod").version == 1
    registry.promote("finance@2", channel="prod", gate="accuracy >= prod - 0.5", evaluate=evaluate)
    before = (registry.get("finance@prod").version, [row.to_dict() for row in registry.history("finance")],
              (registry.root / "index.sqlite").read_bytes())
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote("finance@3", channel="prod", gate="accuracy >= prod - 0.5", evaluate=evaluate)
    assert "accuracy >= prod - 0.5: 85 >= 89.5 (candidate 85, holder 90)" in str(refused.value)
    assert "finance@prod still is finance@2" in str(refused.value)
    after = (registry.get("finance@prod").version, [row.to_dict() for row in registry.history("finance")],
             (registry.root / "index.sqlite").read_bytes())
    assert after == before
    rows = registry.history("finance")
    assert [(row.op, row.from_version, row.to_version, row.state) for row in rows] == [
        ("promote", None, 1, "committed"), ("promote", 1, 2, "committed")]
    assert rows[0].who == "alice" and rows[1].metrics["holder"]["accuracy"] == 0.80
    assert rows[1].checks[0]["passed"] and rows[1].gate == "accuracy >= prod - 0.5"


def test_rollback_steps_back_through_promotions_and_plain_tag_may_not_move_a_channel(registry):
    for version in (1, 2, 3):
        registry.promote(f"finance@{version}", channel="prod")
    assert registry.rollback("finance", channel="prod").row.to_version == 2
    assert registry.rollback("finance", channel="prod").row.to_version == 1
    with pytest.raises(PromotionRefusedError, match="no previous holder"):
        registry.rollback("finance", channel="prod")
    assert registry.get("finance@prod").version == 1
    with pytest.raises(ConfigError, match="is a channel"):
        registry.tag("finance@3", "prod")
    registry.tag("finance@3", "staging")  # an ordinary tag still moves freely


def test_history_survives_rebuild_index_even_when_the_index_is_lost(registry):
    registry.promote("finance@1", channel="prod")
    registry.promote("finance@3", channel="prod")
    registry.promote("finance@2", channel="prod", canary="10%")
    history = [row.to_dict() for row in registry.history("finance")]
    for suffix in ("", "-wal", "-shm"):
        Path(str(registry.root / "index.sqlite") + suffix).unlink(missing_ok=True)
    report = Registry(registry.root).rebuild_index()
    fresh = Registry(registry.root)
    assert report.tags["finance@prod"] == "finance@3" and fresh.get("finance@prod").version == 3
    assert fresh.channel("finance", "prod").canary == 2 and fresh.channel("finance", "prod").canary_percent == 10
    assert [row.to_dict() for row in fresh.history("finance")] == history


def test_canary_then_finish_or_rollback(registry):
    registry.promote("finance@1", channel="prod")
    with pytest.raises(ConfigError, match="between 0 and 100"):
        registry.promote("finance@2", channel="prod", canary="150%")
    registry.promote("finance@2", channel="prod", canary="10%")
    state = registry.channel("finance", "prod")
    assert (state.holder, state.canary, state.canary_percent) == (1, 2, 10.0)
    with pytest.raises(PromotionRefusedError, match="canary of finance@2 runs"):
        registry.promote("finance@3", channel="prod")
    registry.rollback("finance", channel="prod")  # ends the canary, the holder stays
    assert registry.channel("finance", "prod") == type(state)("finance", "prod", 1, None, None)
    registry.promote("finance@2", channel="prod", canary=25)
    finished = registry.finish_canary("finance", channel="prod")
    assert finished.row.op == "finish" and registry.channel("finance", "prod").holder == 2
    assert registry.channel("finance", "prod").canary is None
    assert registry.rollback("finance", channel="prod").row.to_version == 1


def test_concurrent_promotions_of_one_channel_one_wins_the_other_is_refused(registry):
    registry.promote("finance@1", channel="prod")
    inside, release = threading.Event(), threading.Event()

    def slow(ref, data):
        inside.set()
        release.wait(30)
        return {"accuracy": 0.9}

    outcome = {}

    def first():
        outcome["first"] = registry.promote("finance@2", channel="prod", gate="accuracy >= prod", evaluate=slow)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(30)
    with pytest.raises(PromotionRefusedError, match="another promotion or rollback of finance@prod is running"):
        Registry(registry.root).promote("finance@3", channel="prod", evaluate=lambda ref, data: {"accuracy": 1.0})
    release.set()
    thread.join(30)
    assert outcome["first"].row.to_version == 2 and registry.get("finance@prod").version == 2
    assert [row.to_version for row in registry.history("finance")] == [1, 2]


def test_a_stale_promotion_is_refused_when_the_channel_moved(registry):
    """Compare-and-set under the index lock, besides the channel lock: the holder it evaluated must still hold."""
    registry.promote("finance@1", channel="prod")
    expect = registry.channel("finance", "prod")
    registry.promote("finance@2", channel="prod")
    with pytest.raises(PromotionRefusedError, match="another promotion won"):
        registry.channels.move("finance", "prod", op="promote", expect=expect, holder=3, canary=None, who="x")
    assert registry.get("finance@prod").version == 2


KILLED = """
import sys
from adapterhub.registry import Registry
from adapterhub.registry import promotion
registry = Registry(sys.argv[1])
promotion.promote(registry, registry.channels, "finance@2", channel="prod", crash_at=sys.argv[2],
                  evaluate=lambda ref, data: {"accuracy": 0.5})
"""


@pytest.mark.parametrize("point, holder, state", [("pending", 1, "aborted"), ("index", 2, "committed")])
def test_sigkill_during_a_promotion_leaves_one_holder_and_a_matching_history(registry, point, holder, state):
    registry.promote("finance@1", channel="prod")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLED, str(registry.root), point], env=env, capture_output=True,
                          timeout=120)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    fresh = Registry(registry.root)
    assert fresh.get("finance@prod").version == holder
    last = fresh.history("finance")[-1]
    assert (last.to_version, last.state) == (2, state)
    committed = [row for row in fresh.history("finance") if row.state == "committed"]
    assert committed[-1].to_version == holder
    fresh.promote("finance@3", channel="prod")  # the next move settles the pending row into the file
    lines = [json.loads(line) for line in (registry.root / "channels" / "finance.jsonl").read_text().splitlines()]
    assert {"seq": last.seq, "state": state} in lines
    assert fresh.rollback("finance", channel="prod").row.to_version == holder
