"""Configuration: defaults, MONITOR_* env vars, YAML file, and clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import Settings, load_settings


def test_defaults_are_the_embedded_single_process_service(monkeypatch):
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    s = Settings()
    assert (s.host, s.port, s.sampling, s.judge) == ("127.0.0.1", 8000, "auto", "default")
    assert s.embedding_model == "bundled:all-MiniLM-L6-v2"


def test_env_vars_and_csv_lists(monkeypatch):
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("MONITOR_PORT", "9100")
    monkeypatch.setenv("MONITOR_MODELS", "gpt-4o, llama-3")
    monkeypatch.setenv("MONITOR_SAMPLING", "off")
    s = Settings()
    assert s.port == 9100 and s.models == ["gpt-4o", "llama-3"] and s.sampling == "off"


def test_yaml_file_with_env_taking_precedence(tmp_path, monkeypatch):
    path = tmp_path / "monitor.yaml"
    path.write_text("port: 9200\nbatch_size: 16\nroutes: [/chat, /completions]\n")
    monkeypatch.setenv("MONITOR_BATCH_SIZE", "8")
    s = load_settings(path)
    assert s.port == 9200 and s.batch_size == 8 and s.routes == ["/chat", "/completions"]


def test_unknown_yaml_option_is_named(tmp_path, monkeypatch):
    path = tmp_path / "monitor.yaml"
    path.write_text("prot: 1\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings(path)


def test_invalid_values_name_the_field(monkeypatch):
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("MONITOR_SAMPLING", "sometimes")
    with pytest.raises(ValidationError, match="sampling"):
        Settings()
    monkeypatch.delenv("MONITOR_SAMPLING")
    monkeypatch.setenv("MONITOR_JUDGE_MAX_SEQ_LENGTH", "4")
    with pytest.raises(ValidationError, match="judge_max_seq_length"):
        Settings()
    monkeypatch.delenv("MONITOR_JUDGE_MAX_SEQ_LENGTH")
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_SKIP_BELOW", "1.5")
    with pytest.raises(ValidationError, match="judge_prompt_skip_below"):
        Settings()
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_SKIP_BELOW", "0.03")
    assert Settings().judge_prompt_skip_below == 0.03
    monkeypatch.setenv("MONITOR_JUDGE", "heads")  # the heads have no encoder prompt pass to skip
    with pytest.raises(ValidationError, match="judge_prompt_skip_below applies to the hybrid judge"):
        Settings()
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_SKIP_BELOW", "0")  # off: fine with any judge
    assert Settings().judge_prompt_skip_below == 0
    monkeypatch.setenv("MONITOR_JUDGE_PROMPT_SKIP_BELOW", "-0.1")
    with pytest.raises(ValidationError, match="judge_prompt_skip_below"):
        Settings()


@pytest.mark.parametrize("yaml_text", ["admin_tokens: {boss: supersecretvalue-MMMM}\n", "admin_tokens: [{boss: supersecretvalue-MMMM}]\n",
                                       "second_judge_api_key: [supersecretvalue-MMMM]\n"])
def test_a_bad_value_is_named_by_its_option_never_shown(tmp_path, monkeypatch, yaml_text):
    # Any value may be a secret: a token map where a list belongs must not reach the terminal or a log.
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml_text)
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2 and yaml_text.split(":")[0] in result.output, result.output
    assert "supersecretvalue" not in result.output


@pytest.mark.parametrize("url", [":REDISPW-ffff@127.0.0.1:1", "http://user:REDISPW-ffff@cache:6379/0", "REDISPW-ffff"])
def test_a_bad_redis_url_is_named_never_shown(monkeypatch, url):
    # Its user info is the Redis password: the check says what is wrong, not what was given.
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("MONITOR_REDIS_URL", url)
    with pytest.raises(ValueError, match="redis_url: .*expected redis://") as refused:
        load_settings()
    assert "REDISPW" not in str(refused.value)


def test_cross_field_rules_are_checked_at_start(monkeypatch):
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    with pytest.raises(ValidationError, match="embedding_window_events"):
        Settings(embedding_window_events=110)
    with pytest.raises(ValidationError, match="embedding_expected_run_time"):
        Settings(embedding_window_events=500, embedding_expected_run_time=400)
    with pytest.raises(ValidationError, match=r"max_inflight_body_bytes: must be at least twice max_body_bytes \(2097152\), got 2000000"):
        Settings(max_body_bytes=1024 * 1024, max_inflight_body_bytes=2_000_000)
    assert Settings(max_body_bytes=1024 * 1024, max_inflight_body_bytes=2 * 1024 * 1024).max_inflight_body_bytes == 2 * 1024 * 1024
    from monitor.api.triage import MAX_ACTION_BYTES  # the budget's floor holds two of the triage actions' largest bodies

    with pytest.raises(ValidationError, match="max_inflight_body_bytes"):
        Settings(max_body_bytes=1024, max_inflight_body_bytes=2 * MAX_ACTION_BYTES - 1)


def test_serve_help_groups_every_option_under_a_topic_with_its_real_default():
    from typer.testing import CliRunner

    from monitor.cli import app
    from monitor.config import TOPIC_STARTS

    fields = list(Settings.model_fields)
    assert fields[0] in TOPIC_STARTS and set(TOPIC_STARTS) <= set(fields)
    text = " ".join(CliRunner().invoke(app, ["serve", "--help"], terminal_width=400).output.split())
    positions = [text.index(f"[{title}]") for title in TOPIC_STARTS.values()]
    assert positions == sorted(positions)
    assert "PydanticUndefined" not in text
    assert "MONITOR_DETECTORS (default ['category_share', 'embedding_drift'" in text
