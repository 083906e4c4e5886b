"""Privacy rules: drop events, or redact fields and patterns, before an event is validated or hashed.

The rules of a :class:`~celflow._config.PrivacyConfig` are compiled once into
:class:`PrivacyRules`; :meth:`PrivacyRules.apply` is a pure function of the event (it never
changes the caller's dict) that returns the event to store, or ``None`` to discard it.
``prepare_event`` and friends call it first, so the stored row, its dedup hash, validation
messages and everything read back later (queries, streams, exports) only ever see the result.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from ._config import DropRule, PrivacyConfig
from ._exceptions import ConfigError, ValidationError

__all__ = ["PrivacyRules"]

#: How deep data is walked; deeper data could hide a secret from the rules, so it is refused
#: (orjson refuses more than 254 levels anyway; the standard library encoder would go further).
MAX_DEPTH = 254

_MISSING = object()


def _compile(name: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{name} {pattern!r} is not a valid regular expression ({exc})") from None


def _too_deep() -> ValidationError:
    return ValidationError(
        f"data is nested more than {MAX_DEPTH} levels deep (privacy rules cannot check it)", field="data"
    )


def _any_text_matches(value: object, pattern: re.Pattern[str], depth: int = 0) -> bool:
    """Whether ``pattern`` is found in a string of ``value`` (any depth; dict keys included)."""
    if isinstance(value, str):
        return pattern.search(value) is not None
    if depth > MAX_DEPTH:
        raise _too_deep()
    if isinstance(value, dict):
        return any(
            (isinstance(k, str) and pattern.search(k) is not None) or _any_text_matches(v, pattern, depth + 1)
            for k, v in value.items()
        )
    if isinstance(value, (list, tuple)):
        return any(_any_text_matches(v, pattern, depth + 1) for v in value)
    return False


class _Drop:
    """A compiled drop rule: every condition given must hold."""

    __slots__ = ("action", "event_type", "path", "pattern", "source")

    def __init__(self, rule: DropRule, index: int) -> None:
        self.event_type = rule.event_type
        self.source = rule.source
        self.action = rule.action
        path = tuple(rule.field.split(".")) if rule.field is not None else None
        self.pattern = _compile(f"privacy.drop[{index}].pattern", rule.pattern) if rule.pattern is not None else None
        if path is None and self.pattern is not None:
            path = ("data",)
        self.path = path

    def matches(self, event: Mapping[str, Any]) -> bool:
        if self.event_type is not None and event.get("event_type") != self.event_type:
            return False
        if self.source is not None and event.get("source") != self.source:
            return False
        if self.action is not None and event.get("action") != self.action:
            return False
        if self.path is None:
            return True
        value: object = event
        for key in self.path:
            if not isinstance(value, Mapping):
                return False
            value = value.get(key, _MISSING)
            if value is _MISSING:
                return False
        return self.pattern is None or _any_text_matches(value, self.pattern)


class PrivacyRules:
    """Compiled privacy rules; build them with :meth:`compile` (``None`` when there are none)."""

    def __init__(self, config: PrivacyConfig) -> None:
        self.config = config
        self._drops = [_Drop(rule, i) for i, rule in enumerate(config.drop)]
        self._fields = frozenset(name.lower() for name in config.redact_fields)
        self._patterns = [_compile(f"privacy.redact_patterns[{i}]", p) for i, p in enumerate(config.redact_patterns)]
        self._replacement = config.replacement
        self._lock = threading.Lock()
        self._dropped = 0

    @classmethod
    def compile(cls, config: PrivacyConfig | PrivacyRules | None) -> PrivacyRules | None:
        """The rules of ``config``, or ``None`` when it has none (the hot path then skips privacy)."""
        if config is None or isinstance(config, PrivacyRules):
            return config
        if not (config.drop or config.redact_fields or config.redact_patterns):
            return None
        return cls(config)

    @property
    def dropped(self) -> int:
        """How many events a drop rule has matched so far (they are never stored)."""
        return self._dropped

    def apply(self, event: Any) -> Any:
        """The event to store (a new dict if anything was redacted), or ``None`` to discard it.

        Anything that is not a mapping comes back unchanged: validation refuses it next.
        Raises :class:`ValidationError` for data nested too deep to check.
        """
        if not isinstance(event, Mapping):
            return event
        for rule in self._drops:
            if rule.matches(event):
                with self._lock:
                    self._dropped += 1
                return None
        changed: dict[str, Any] = {}
        data = event.get("data", _MISSING)
        if data is not _MISSING and (self._fields or self._patterns):
            redacted = self._redact(data, 0)
            if redacted is not data:
                changed["data"] = redacted
        action = event.get("action")
        if isinstance(action, str) and self._patterns:
            text = self._text(action)
            if text is not action:
                changed["action"] = text
        if not changed:
            return event
        return {**event, **changed}

    def _redact(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self._text(value) if self._patterns else value
        if depth > MAX_DEPTH:
            raise _too_deep()
        if isinstance(value, dict):
            out: dict[Any, Any] | None = None
            for i, (key, item) in enumerate(value.items()):
                if isinstance(key, str):
                    new_item = self._replacement if key.lower() in self._fields else self._redact(item, depth + 1)
                    new_key = self._text(key) if self._patterns else key
                else:
                    new_item, new_key = self._redact(item, depth + 1), key
                if out is None and (new_item is not item or new_key is not key):
                    out = dict(list(value.items())[:i])
                if out is not None:
                    out[new_key] = new_item  # keys that redact to the same text merge: the last one wins
            return value if out is None else out
        if isinstance(value, (list, tuple)):
            items = [self._redact(item, depth + 1) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            return items
        return value

    def _text(self, text: str) -> str:
        """``text`` with every match of every pattern replaced (the same object when none matched).

        Matches are found on the original text and overlapping ones merged, so one pattern's
        replacement never hides part of another's match.
        """
        spans = sorted(m.span() for p in self._patterns for m in p.finditer(text) if m.end() > m.start())
        if not spans:
            return text
        parts: list[str] = []
        at = 0
        start, end = spans[0]
        for next_start, next_end in spans[1:]:
            if next_start <= end:  # overlapping or touching: one replacement
                end = max(end, next_end)
                continue
            parts += (text[at:start], self._replacement)
            at, start, end = end, next_start, next_end
        parts += (text[at:start], self._replacement, text[end:])
        return "".join(parts)
