"""Privacy rules: the [privacy] settings, dropping and redacting before validation, hashing and storage."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celflow import ConfigError, EventDatabase, EventPersistenceManager, ValidationError, load_config, parse_config
from celflow._config import DropRule, PrivacyConfig
from celflow._encoding import EncodingOptions, decode_data, prepare_batch, prepare_each, prepare_event
from celflow._privacy import PrivacyRules

CELFLOW = str(Path(sys.executable).with_name("celflow"))
TS = float(int(time.time()) - 3600)  # recent: retention (30 days) must not delete the events under test


def rules(**settings_: Any) -> PrivacyRules:
    compiled = PrivacyRules.compile(PrivacyConfig(**settings_))
    assert compiled is not None
    return compiled


def options(**settings_: Any) -> EncodingOptions:
    return EncodingOptions(privacy=rules(**settings_))


def event(data: Any = None, **fields: Any) -> dict[str, Any]:
    return {"event_type": "note", "source": "test", "timestamp": TS, "data": {} if data is None else data, **fields}


def stored_text(row: Any) -> str:
    """Everything of a prepared row that reaches the file, as text (data decompressed)."""
    data = json.dumps(decode_data(row.data_json, row.data_compressed), ensure_ascii=False)
    return f"{row.event_type}|{row.source}|{row.action}|{data}"


# -- configuration ------------------------------------------------------------------------------


def test_no_rules_by_default(db_path: Path) -> None:
    """Without a [privacy] section there are no rules: events round-trip exactly and nothing is compiled."""
    assert PrivacyRules.compile(load_config(env={})[0].privacy) is None
    assert EventPersistenceManager({"database_path": str(db_path)}).options.privacy is None
    with EventDatabase(db_path) as db:
        assert db.options.privacy is None
        db.store_event(event({"password": "kept", "text": "sk-0123456789abcdef"}))
        assert db.get_events()[0]["data"] == {"password": "kept", "text": "sk-0123456789abcdef"}


def test_privacy_section_from_a_file(tmp_path: Path) -> None:
    """[privacy] keys and [[privacy.drop]] tables load from TOML, with their origin."""
    toml = tmp_path / "celflow.toml"
    toml.write_text(
        "[privacy]\n"
        'redact_fields = ["password", "Token"]\n'
        "redact_patterns = ['sk-[0-9a-f]{16}', '(?i)bearer \\S+']\n"
        'replacement = "***"\n'
        "[[privacy.drop]]\n"
        'event_type = "clipboard"\n'
        "[[privacy.drop]]\n"
        'field = "data.url"\n'
        'pattern = "bank\\\\.example"\n'
    )
    config, origin = load_config(toml, env={})
    privacy = config.privacy
    assert privacy.redact_fields == ["password", "Token"] and privacy.replacement == "***"
    assert privacy.redact_patterns == ["sk-[0-9a-f]{16}", "(?i)bearer \\S+"]
    assert privacy.drop == [DropRule(event_type="clipboard"), DropRule(field="data.url", pattern="bank\\.example")]
    assert origin["privacy.drop"] == f"file {toml}" and origin["privacy.redact_fields"] == f"file {toml}"


def test_privacy_from_the_environment() -> None:
    """CELFLOW_PRIVACY_REDACT_FIELDS is ':'-separated; patterns and drop rules are JSON arrays (regexes hold ':')."""
    config, origin = load_config(
        env={
            "CELFLOW_PRIVACY_REDACT_FIELDS": "password:api_key",
            "CELFLOW_PRIVACY_REDACT_PATTERNS": '["(?:sk|pk)-[0-9a-f]{16}"]',
            "CELFLOW_PRIVACY_DROP": '[{"event_type": "clipboard"}, {"source": "keys", "action": "press"}]',
            "CELFLOW_PRIVACY_REPLACEMENT": "<hidden>",
        }
    )
    privacy = config.privacy
    assert privacy.redact_fields == ["password", "api_key"]
    assert privacy.redact_patterns == ["(?:sk|pk)-[0-9a-f]{16}"]
    assert privacy.drop == [DropRule(event_type="clipboard"), DropRule(source="keys", action="press")]
    assert privacy.replacement == "<hidden>" and origin["privacy.drop"] == "env CELFLOW_PRIVACY_DROP"


def test_seed_dict_with_a_privacy_section() -> None:
    """The Python dict form takes a privacy section next to persistence."""
    config = parse_config({"persistence": {"batch_size": 10}, "privacy": {"drop": [{"source": "keys"}]}})
    assert config.persistence.batch_size == 10 and config.privacy.drop == [DropRule(source="keys")]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[privacy]\nredact_patterns = ['ok', '(']\n", ["privacy.redact_patterns[1]", "'('", "regular expression"]),
        ("[[privacy.drop]]\nevent_type = 'a'\n[[privacy.drop]]\npattern = '[z'\n", ["privacy.drop[1]", "pattern"]),
        ("[[privacy.drop]]\nevent_typ = 'clipboard'\n", ["privacy.drop[0]", "event_typ"]),
        ("[[privacy.drop]]\n", ["privacy.drop[0]", "at least one of"]),
        ("[[privacy.drop]]\nfield = 'timestamp'\n", ["privacy.drop[0]", "'timestamp'"]),
        ("[[privacy.drop]]\nfield = 'source.x'\n", ["privacy.drop[0]", "'source.x'"]),
        ("[[privacy.drop]]\nfield = 'data..x'\n", ["privacy.drop[0]", "'data..x'"]),
        ("[privacy]\nredact_fields = ['a', '']\n", ["privacy.redact_fields[1]", "empty"]),
        ("[privacy]\nredact_field = ['a']\n", ["redact_field"]),
        ("[privacy]\ndrop = {event_type = 'a'}\n", ["privacy.drop", "array"]),
    ],
)
def test_bad_privacy_settings_name_the_rule_and_key(tmp_path: Path, text: str, named: list[str]) -> None:
    """A bad regex, an unknown or missing key, or a bad field path is a ConfigError naming the file, rule and key."""
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(toml, env={})
    message = str(info.value)
    assert str(toml) in message
    for part in named:
        assert part in message, message


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("CELFLOW_PRIVACY_REDACT_PATTERNS", "sk-[0-9a-f]+", "JSON array"),
        ("CELFLOW_PRIVACY_DROP", '{"event_type": "x"}', "JSON array"),
        ("CELFLOW_PRIVACY_REDACT_PATTERNS", '["("]', "regular expression"),
        ("CELFLOW_PRIVACY_DROP", '[{"evnt_type": "x"}]', "evnt_type"),
    ],
)
def test_bad_privacy_environment_names_the_variable(name: str, value: str, named: str) -> None:
    """A privacy variable that is not a JSON array, or holds a bad rule, names the variable and the problem."""
    with pytest.raises(ConfigError, match=name) as info:
        load_config(env={name: value})
    assert named in str(info.value)


def test_config_show_lists_the_privacy_section(tmp_path: Path) -> None:
    """`celflow config show --json` prints the privacy settings, drop rules as plain objects."""
    toml = tmp_path / "celflow.toml"
    toml.write_text("[privacy]\nredact_fields = ['password']\n[[privacy.drop]]\nsource = 'keys'\n")
    shown = subprocess.run(
        [CELFLOW, "--config", str(toml), "config", "show", "--json"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    settings_ = json.loads(shown.stdout)
    assert settings_["privacy.drop"] == {"value": [{"source": "keys"}], "origin": f"file {toml}"}
    assert settings_["privacy.redact_fields"]["value"] == ["password"]
    assert settings_["privacy.replacement"] == {"value": "[REDACTED]", "origin": "default"}
    table = subprocess.run(
        [CELFLOW, "--config", str(toml), "config", "show"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0 and "privacy.drop" in table.stdout and "'keys'" in table.stdout


# -- apply: dropping ----------------------------------------------------------------------------


def test_drop_rules_match_when_every_key_given_matches() -> None:
    """A drop rule discards an event only when all of its keys match; other events are kept."""
    privacy = rules(
        drop=[
            DropRule(event_type="clipboard"),
            DropRule(source="keys", action="press"),
            DropRule(field="data.window.title", pattern="(?i)private"),
            DropRule(field="data.incognito"),
            DropRule(event_type="browser_tab", pattern="bank\\.example"),
        ]
    )
    dropped = [
        event(event_type="clipboard"),
        event(source="keys", action="press"),
        event({"window": {"title": "A PRIVATE window"}}),
        event({"incognito": False}),
        event({"tabs": [{"url": "https://bank.example/login"}]}, event_type="browser_tab"),
        event({"https://bank.example": 1}, event_type="browser_tab"),  # keys are text too
    ]
    kept = [
        event(event_type="clipboard_manager"),
        event(source="keys", action="release"),
        event(source="mouse", action="press"),
        event({"window": {"title": "notes"}}),
        event({"window": "private"}),  # the path goes through a dict that is not there
        event({"title": "private"}),
        event({"url": "https://bank.example"}),  # the pattern rule also needs event_type browser_tab
        event({"tabs": [{"url": "https://bank.example.org.invalid"}]}, event_type="browser"),
        event({"url": "https://news.example"}, event_type="browser_tab"),  # the type alone is not enough
    ]
    assert [privacy.apply(e) for e in dropped] == [None] * len(dropped)
    assert all(privacy.apply(e) is e for e in kept)
    assert privacy.dropped == len(dropped)


def test_field_rule_on_action_and_type() -> None:
    """``field`` can point at a top-level name; a pattern is searched in its text."""
    privacy = rules(drop=[DropRule(field="action", pattern="^secret-")])
    assert privacy.apply(event(action="secret-save")) is None
    assert privacy.apply(event(action="save")) is not None
    assert privacy.apply(event()) is not None  # no action at all: the field is missing


# -- apply: redacting ---------------------------------------------------------------------------


def test_redact_fields_at_any_depth_case_insensitive_without_touching_the_caller() -> None:
    """A named field's whole value is replaced wherever it is, whatever its case; the caller's dict is unchanged."""
    privacy = rules(redact_fields=["password", "API_KEY"])
    original = event(
        {
            "user": "ann",
            "Password": "p1",
            "nested": {"forms": [{"PASSWORD": {"old": "p2", "new": "p3"}}, {"field": "password"}]},
            "api_key": ["k1", "k2"],
        }
    )
    before = copy.deepcopy(original)
    out = privacy.apply(original)
    assert original == before
    assert out["data"] == {
        "user": "ann",
        "Password": "[REDACTED]",
        "nested": {"forms": [{"PASSWORD": "[REDACTED]"}, {"field": "password"}]},  # a value named password stays
        "api_key": "[REDACTED]",
    }
    assert out["event_type"] == "note" and out["timestamp"] == TS


def test_redact_patterns_in_text_keys_and_action() -> None:
    """Every match of every pattern is replaced in data strings, dict keys and action; event_type and source stay."""
    privacy = rules(redact_patterns=["sk-[0-9a-f]{8}", "\\b\\d{4}-\\d{4}\\b"], replacement="<x>")
    out = privacy.apply(
        event(
            {"text": "use sk-0123abcd or 1111-2222, not sk-12", "sk-deadbeef": [1, "card 3333-4444"]},
            action="paste sk-ffffffff",
        )
    )
    assert out["data"] == {"text": "use <x> or <x>, not sk-12", "<x>": [1, "card <x>"]}
    assert out["action"] == "paste <x>"


def test_overlapping_matches_never_leave_part_of_a_secret() -> None:
    """Matches are found on the original text and merged: one pattern's replacement cannot split another's match."""
    privacy = rules(redact_patterns=["ABCD", "tok_[A-Z0-9]+"])
    assert privacy.apply(event({"t": "x tok_ABCD1234 y"}))["data"] == {"t": "x [REDACTED] y"}
    touching = rules(redact_patterns=["aa", "bb"])
    assert touching.apply(event({"t": "aabb-aa"}))["data"] == {"t": "[REDACTED]-[REDACTED]"}


def test_too_deep_data_is_refused_when_rules_apply() -> None:
    """Data nested deeper than the rules check (even past Python's recursion limit) is a ValidationError."""
    for depth in (300, 5000):
        deep: Any = {"password": "secret", "big": 2**70}  # a big integer: the standard library's encoder
        for _ in range(depth):
            deep = [deep]
        with pytest.raises(ValidationError, match="nested more than 254"):
            prepare_event(event({"d": deep}), options(redact_fields=["password"]))
        with pytest.raises(ValidationError, match="nested more than 254"):
            prepare_event(event({"d": deep}), options(drop=[DropRule(pattern="secret")]))


def test_not_an_event_is_still_a_validation_error() -> None:
    """Rules leave what is not a mapping to validation, which refuses it as before."""
    with pytest.raises(ValidationError, match="must be a dict"):
        prepare_event(["event_type", "t"], options(redact_fields=["password"]))  # type: ignore[arg-type]


secret_tokens = st.uuids().map(lambda u: f"SECRET{u.hex}")
names = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet="abcdefgh xyz", max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=15,
)


@st.composite
def data_with_secrets(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """Plain data with secrets planted under redacted names and inside text, at random places."""
    data: dict[str, Any] = draw(st.dictionaries(names, plain, max_size=4))
    secrets: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        secret = draw(secret_tokens)
        secrets.append(secret)
        spot = data
        for key in draw(st.lists(names, max_size=3)):
            child = spot.get(key)
            if not isinstance(child, dict):
                child = spot[key] = {}
            spot = child
        kind = draw(st.sampled_from(["field", "nested field", "text", "key"]))
        if kind == "field":
            spot[draw(st.sampled_from(["password", "Password", "TOKEN"]))] = secret
        elif kind == "nested field":
            spot["token"] = {"value": [secret], "n": 1}
        elif kind == "text":
            spot[draw(names)] = f"{draw(plain.filter(lambda v: isinstance(v, str)))} {secret} tail"
        else:
            spot[f"k {secret}"] = draw(plain)
    return data, secrets


@settings(max_examples=200, deadline=None)
@given(data_with_secrets(), st.sampled_from([1024, 0]))
def test_no_planted_secret_survives_redaction(planted: tuple[Any, list[str]], threshold: int) -> None:
    """Property: a secret under a redacted name or matching a pattern appears nowhere in the stored row."""
    data, secrets = planted
    opts = EncodingOptions(
        threshold, privacy=rules(redact_fields=["password", "token"], redact_patterns=["SECRET\\w+"])
    )
    row = prepare_event(event(data), opts)
    assert row is not None
    text = stored_text(row)
    assert not [s for s in secrets if s in text]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, plain, max_size=5), st.sampled_from(["save", None]))
def test_events_the_rules_do_not_match_come_back_equal(data: Any, action: str | None) -> None:
    """Property: an event no rule matches comes back as it was, and its row (and hash) is the one without rules."""
    privacy = rules(redact_fields=["password"], redact_patterns=["SECRET\\w+"], drop=[DropRule(source="other")])
    original = event(data, action=action)
    assert privacy.apply(original) is original
    assert prepare_event(original, EncodingOptions(privacy=privacy)) == prepare_event(original)


# -- hashing and storage ------------------------------------------------------------------------


def test_hash_is_computed_after_redaction(db_path: Path) -> None:
    """The dedup hash is that of the redacted event: a retry dedups, and the secret cannot be guessed from it."""
    opts = options(redact_fields=["password"])
    first = prepare_event(event({"user": "ann", "password": "hunter2"}), opts)
    other = prepare_event(event({"user": "ann", "password": "letmein"}), opts)
    redacted = prepare_event(event({"user": "ann", "password": "[REDACTED]"}))
    unredacted = prepare_event(event({"user": "ann", "password": "hunter2"}))
    assert first is not None and other is not None and redacted is not None and unredacted is not None
    assert first.hash == other.hash == redacted.hash != unredacted.hash
    with EventDatabase(db_path, privacy=PrivacyConfig(redact_fields=["password"])) as db:
        ids = db.store_events_batch([event({"user": "ann", "password": "hunter2"})])
        again = db.store_events_batch([event({"user": "ann", "password": "hunter2"})])  # a retry
        assert ids == again and db.count_events() == 1
        assert db.get_events()[0]["data"] == {"user": "ann", "password": "[REDACTED]"}


def test_database_drops_and_redacts(db_path: Path) -> None:
    """EventDatabase: a dropped event gets no id (store_event returns None) and is not stored; the rest are redacted."""
    privacy = PrivacyConfig(drop=[DropRule(event_type="clipboard")], redact_patterns=["sk-\\w+"])
    with EventDatabase(db_path, privacy=privacy) as db:
        assert db.store_event(event({"text": "x"}, event_type="clipboard")) is None
        ids = db.store_events_batch(
            [event({"n": 1, "t": "sk-abc"}), event({"n": 2}, event_type="clipboard"), event({"n": 3})]
        )
        assert len(ids) == 2
        assert db.store_events_batch([event({"n": 4}, event_type="clipboard")]) == []
        stored = {e["data"]["n"]: e for e in db.get_events()}
        assert sorted(stored) == [1, 3] and [e["id"] for e in sorted(stored.values(), key=lambda e: e["id"])] == ids
        assert stored[1]["data"]["t"] == "[REDACTED]"
        assert db.options.privacy is not None and db.options.privacy.dropped == 3


def test_a_bad_batch_with_dropped_events_stores_nothing(db_path: Path) -> None:
    """A batch stays all or nothing: a bad event rejects it (with its input index) even if others were dropped."""
    with EventDatabase(db_path, privacy=PrivacyConfig(drop=[DropRule(event_type="clipboard")])) as db:
        with pytest.raises(ValidationError) as info:
            db.store_events_batch([event(event_type="clipboard"), event(), {"event_type": "x"}])
        assert info.value.index == 2 and db.count_events() == 0


def test_prepare_each_reports_kept_indexes() -> None:
    """prepare_each gives rows of the kept events, errors with their input index, and the kept indexes."""
    kept: list[int] = []
    rows, errors = prepare_each(
        [event(event_type="clipboard"), event({"n": 1}), {"source": "s"}, event({"n": 2})],
        options(drop=[DropRule(event_type="clipboard")]),
        kept=kept,
    )
    assert kept == [1, 3] and len(rows) == 2 and [e.index for e in errors] == [2]
    assert prepare_batch([event(event_type="clipboard")], options(drop=[DropRule(event_type="clipboard")])) == []


def test_manager_counts_dropped_events(db_path: Path) -> None:
    """The manager drops before queueing: queue_event says True, store_event None, and get_stats counts them."""

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], Any, bool, list[int]]:
        manager = EventPersistenceManager(
            {
                "persistence": {"database_path": str(db_path), "stats_interval": 0},
                "privacy": {"drop": [{"event_type": "clipboard"}], "redact_fields": ["password"]},
            }
        )
        async with manager:
            queued = manager.queue_event(event({"text": "x"}, event_type="clipboard"))
            manager.queue_events_batch([event({"n": 1, "password": "p"}), event({"n": 2}, event_type="clipboard")])
            none_id = await manager.store_event(event(event_type="clipboard"))
            ids = await manager.store_events([event({"n": 3}), event(event_type="clipboard")])
            await manager.flush()
            assert manager.database is not None
            assert manager.database.options.privacy is manager.options.privacy  # one counter
            return manager.get_events(), manager.get_stats(), none_id, queued, ids

    stored, stats, none_id, queued, ids = asyncio.run(scenario())
    assert queued is True and none_id is None and len(ids) == 1
    assert sorted(e["data"]["n"] for e in stored) == [1, 3]
    assert [e["data"] for e in stored if e["data"]["n"] == 1] == [{"n": 1, "password": "[REDACTED]"}]
    assert stats["privacy_dropped"] == 4 and stats["total_stored"] == 2


def test_no_privacy_counter_without_rules(db_path: Path) -> None:
    """get_stats reports privacy_dropped 0 when there are no rules."""

    async def scenario() -> dict[str, Any]:
        async with EventPersistenceManager({"database_path": str(db_path), "stats_interval": 0}) as manager:
            await manager.store_events([event()])
            return manager.get_stats()

    assert asyncio.run(scenario())["privacy_dropped"] == 0


# -- nothing echoed -----------------------------------------------------------------------------


def test_validation_messages_do_not_echo_values() -> None:
    """A bad event's message names the field and the problem, never the value it holds."""
    secret = f"SECRET{uuid.uuid4().hex}"
    bad: list[dict[str, Any]] = [
        event(timestamp=secret),
        event(timestamp=f"2024-01-01T00:00:00 {secret}"),
        event(event_type=secret * 10),
        event(action=secret * 10),
        event(idempotency_key=secret * 10),
        event({"tags": {secret}}),
        event({(secret,): 1}),
        event({"n": float("nan"), "s": secret}),
    ]
    for one in bad:
        with pytest.raises(ValidationError) as info:
            prepare_event(one)
        assert secret not in str(info.value), str(info.value)


# -- import -------------------------------------------------------------------------------------


def test_import_applies_the_rules_and_does_not_keep_hashes(tmp_path: Path) -> None:
    """`celflow events import` applies the rules: dropped events are reported, the file's hashes are not kept."""
    db = tmp_path / "events.db"
    source = tmp_path / "in.jsonl"
    lines = [
        event({"n": 1, "password": "hunter2"}, hash="00000000000000aa"),
        event({"n": 2}, event_type="clipboard"),
        event({"n": 3}, hash="00000000000000bb"),
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    toml = tmp_path / "celflow.toml"
    toml.write_text("[privacy]\nredact_fields = ['password']\n[[privacy.drop]]\nevent_type = 'clipboard'\n")
    done = subprocess.run(
        [CELFLOW, "--config", str(toml), "events", "import", str(source), "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "imported": 2,
        "duplicates": 0,
        "rejected": 0,
        "rejects": [],
        "privacy_dropped": 1,
    }
    with EventDatabase(db, readonly=True) as database:
        stored = {e["data"]["n"]: e for e in database.get_events()}
    assert sorted(stored) == [1, 3]
    assert stored[1]["data"]["password"] == "[REDACTED]"
    assert {stored[1]["hash"], stored[3]["hash"]}.isdisjoint({"00000000000000aa", "00000000000000bb"})
