"""Configuration: seed defaults, TOML file, CELFLOW_* variables, flags, and where each value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from celflow import ConfigError, PersistenceConfig, load_config, parse_config
from celflow._config import config_items, default_config_path


def test_defaults_are_the_seeds() -> None:
    """With nothing set, the seed's defaults apply."""
    config, origin = load_config(env={})
    p = config.persistence
    assert (p.database_path, p.batch_size, p.batch_timeout, p.retention_days, p.cleanup_interval_hours) == (
        "data/events.db",
        100,
        5.0,
        30,
        24,
    )
    assert config.enable_persistence is True and origin == {}
    assert config.capture.process_cmdline is False


def test_file_env_flags_precedence(tmp_path: Path) -> None:
    """File beats defaults, environment beats file, flags beat environment; origins are reported."""
    toml = tmp_path / "celflow.toml"
    toml.write_text("[persistence]\nbatch_size = 200\nbatch_timeout = 3.0\n[capture]\nprocesses = false\n")
    config, origin = load_config(
        toml,
        env={"CELFLOW_BATCH_TIMEOUT": "1.5", "CELFLOW_CAPTURE_PATHS": "/a:/b"},
        overrides={"persistence.database_path": "x.db"},
    )
    assert config.persistence.batch_size == 200 and origin["persistence.batch_size"] == f"file {toml}"
    assert (
        config.persistence.batch_timeout == 1.5 and origin["persistence.batch_timeout"] == "env CELFLOW_BATCH_TIMEOUT"
    )
    assert config.capture.paths == ["/a", "/b"] and config.capture.processes is False
    assert config.persistence.database_path == "x.db" and origin["persistence.database_path"] == "command line"
    shown = {name: source for name, _, source in config_items(config, origin)}
    assert shown["persistence.retention_days"] == "default"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[persistence]\nbatch_size = 0\n", "batch_size"),
        ("[persistence]\nbatchsize = 10\n", "batchsize"),
        ("[capture]\nprocess_interval = -1\n", "process_interval"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("[persistence\n", "not valid TOML"),
    ],
)
def test_bad_file(tmp_path: Path, text: str, message: str) -> None:
    """A bad config file names the file and the key."""
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(toml, env={})
    assert str(toml) in str(info.value)


def test_bad_environment_value() -> None:
    """A bad CELFLOW_* value names the variable."""
    with pytest.raises(ConfigError, match="CELFLOW_BATCH_SIZE"):
        load_config(env={"CELFLOW_BATCH_SIZE": "lots"})
    with pytest.raises(ConfigError, match="CELFLOW_DURABILITY"):
        load_config(env={"CELFLOW_DURABILITY": "maybe"})


def test_missing_file() -> None:
    """An explicit config file that does not exist is an error."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/celflow.toml", env={})


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CELFLOW_CONFIG, then ./celflow.toml, then $XDG_CONFIG_HOME/celflow/config.toml."""
    monkeypatch.chdir(tmp_path)
    xdg = tmp_path / "xdg"
    (xdg / "celflow").mkdir(parents=True)
    (xdg / "celflow" / "config.toml").write_text("[persistence]\nbatch_size = 7\n")
    env = {"XDG_CONFIG_HOME": str(xdg)}
    assert default_config_path(env) == xdg / "celflow" / "config.toml"
    assert load_config(env=env)[0].persistence.batch_size == 7
    (tmp_path / "celflow.toml").write_text("[persistence]\nbatch_size = 8\n")
    assert load_config(env=env)[0].persistence.batch_size == 8
    assert default_config_path({**env, "CELFLOW_CONFIG": "/x.toml"}) == Path("/x.toml")


def test_whole_config_type() -> None:
    """Config objects pass through parse_config unchanged; a PersistenceConfig is wrapped."""
    config = load_config(env={})[0]
    assert parse_config(config) is config
    part = PersistenceConfig(batch_size=7)
    assert parse_config(part).persistence is part
