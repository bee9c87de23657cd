"""The one error root of presale; every CLI error is one of these, shown as one line."""

from __future__ import annotations


class PresaleError(Exception):
    """Something a user must fix; its message is one readable line."""


class SettingsError(PresaleError):
    """A setting (environment variable or flag) is missing or malformed."""


class BaselineError(PresaleError):
    """The baseline CSV cannot be read."""


class RedisUnavailable(PresaleError):
    """Redis does not answer, or refuses our credentials."""


class KafkaUnavailable(PresaleError):
    """The Kafka bootstrap servers do not answer."""


class RecordingError(PresaleError):
    """A recorded stream file cannot be read."""


class RulesMismatch(PresaleError):
    """A worker's campaign rules differ from those the campaign was started with."""
