"""The Hub environment, read at call time (huggingface_hub reads it once, at import)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.hf.client import HubRef, HubSettings

HF_VARIABLES = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
                "HF_HUB_OFFLINE")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in HF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    return monkeypatch


@pytest.mark.parametrize("env, login_file, expected", [
    ({}, None, {"cache_dir": "home/hub", "token": None, "offline": False}),
    ({"HF_HUB_CACHE": "{tmp}/cache", "HF_TOKEN": "hf_env"}, "hf_file", {"cache_dir": "cache", "token": "hf_env"}),
    ({}, "hf_file\n", {"token": "hf_file"}),
    ({"HF_TOKEN_PATH": "{tmp}/elsewhere"}, "hf_file", {"token": None}),
    ({"HF_HUB_OFFLINE": "1"}, None, {"offline": True}),
    ({"HF_HUB_OFFLINE": "0"}, None, {"offline": False}),
    ({"HF_ENDPOINT": "http://127.0.0.1:9/"}, None, {"endpoint": "http://127.0.0.1:9"}),
])
def test_settings_follow_the_environment_now(clean_env, tmp_path, env, login_file, expected):
    for name, value in env.items():
        clean_env.setenv(name, value.format(tmp=tmp_path))
    if login_file is not None:
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "token").write_text(login_file)
    settings = HubSettings.from_env()
    for field, value in expected.items():
        actual = getattr(settings, field)
        assert (actual == tmp_path / value) if field == "cache_dir" else (actual == value)


def test_the_token_never_shows_in_repr(clean_env):
    clean_env.setenv("HF_TOKEN", "hf_very_secret")
    assert HubSettings.from_env().token == "hf_very_secret"
    assert "hf_very_secret" not in repr(HubSettings.from_env())


def test_hub_ref_prints_as_an_hf_uri():
    assert str(HubRef("acme/legal", "v2")) == "hf://acme/legal@v2" and str(HubRef("acme/legal")) == "hf://acme/legal"
