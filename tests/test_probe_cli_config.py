"""Probe settings and ``monitor probe run``: off by default, targets and sets checked at start naming
the option, the API key never shown, and one run of the command against a fake model."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import Settings
from tests.fakes.canary_model import CanaryModel
from tests.fakes.openai_chat_server import FakeChatServer
from tests.helpers.probes import builtin_sets

KEY = "sk-probe-cli-5e8d1a7c"


def test_probing_is_off_by_default_and_configured_from_env(monkeypatch, tmp_path):
    assert Settings().probe_targets == []
    monkeypatch.setenv("MONITOR_PROBE_TARGETS", "gpt-4o@http://gateway:4000/v1, llama@https://vllm.internal/v1")
    monkeypatch.setenv("MONITOR_PROBE_API_KEY", KEY)
    s = Settings()
    assert s.probe_targets == ["gpt-4o@http://gateway:4000/v1", "llama@https://vllm.internal/v1"]
    assert s.probe_api_key.get_secret_value() == KEY and KEY not in repr(s) and KEY not in str(s.model_dump())
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    assert "MONITOR_PROBE_TARGETS" in help_text and KEY not in help_text


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"probe_targets": ["http://gateway/v1"]}, "probe_targets", "expected MODEL@URL"),
        ({"probe_targets": ["m@http://u:secret@gateway/v1"]}, "probe_targets", "must not carry credentials"),
        ({"probe_targets": ["m@http://a/v1", "m@http://b/v1"]}, "probe_targets", "each model may be probed once"),
        ({"probe_targets": ["m@http://a/v1"], "probe_sets": ["no_such_set"]}, "", "neither a built-in set"),
        ({"probe_interval_seconds": 1}, "probe_interval_seconds", "greater than or equal to 10"),
    ],
)
def test_bad_probe_settings_name_the_option(options, field, message):
    with pytest.raises(ValidationError) as info:
        Settings(**options)
    text = str(info.value)
    assert field in text and message in text


def test_serve_stops_on_a_bad_target_without_showing_its_credentials(monkeypatch):
    monkeypatch.setenv("MONITOR_PROBE_TARGETS", "m@http://user:hunter2@gateway/v1")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "probe_targets" in result.output and "hunter2" not in result.output


def test_probe_run_rejects_a_bad_target_naming_it():
    result = CliRunner().invoke(app, ["probe", "run", "--target", "ftp://gateway/v1", "--model", "m"])
    assert result.exit_code == 2 and "URL must be http:// or https://" in result.output


@pytest.mark.slow
def test_probe_run_asks_judges_and_reports(monkeypatch):
    sets = builtin_sets()
    model = CanaryModel(sets)
    model.comply_share = 0.2
    with FakeChatServer(model, api_key=KEY) as fake:
        monkeypatch.setenv("MONITOR_PROBE_API_KEY", KEY)
        result = CliRunner().invoke(app, ["probe", "run", "--target", fake.base_url, "--model", "canary", "--rounds", "2", "--json"])
    assert result.exit_code == 0, result.output
    rounds = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["round"] for r in rounds] == [0, 1] and all(r["answered"] == 69 and r["failed"] == {} for r in rounds)
    # The shipped judge sees the 6 harmful requests the fake now answers.
    complied = {item.split("/")[1].split(" ")[0] for item in rounds[0]["bad"] if "unsafe_compliance" in item}
    assert complied == model.flipped_ids()
    assert KEY not in result.output and fake.authorizations[0] == f"Bearer {KEY}"
