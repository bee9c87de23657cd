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


class RecordingError(PresaleError, ValueError):
    """A recorded stream file cannot be read, or a line of it cannot be turned
    into a Kafka record (streams/recordings.py; the message names file and
    line). Also a ValueError, as the reader's error always was."""


class RulesMismatch(PresaleError):
    """A worker's campaign rules differ from those the campaign was started with."""
