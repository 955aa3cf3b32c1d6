"""The exception tree: one root, so callers can catch everything meterwax raises on purpose."""


class MeterwaxError(Exception):
    """Root of every error meterwax raises deliberately."""


class ConfigError(MeterwaxError):
    """A setting, flag or environment variable has a value meterwax cannot use."""


class LakeError(MeterwaxError):
    """The lake is missing, unreadable, or was written with incompatible settings."""


class BrokerError(MeterwaxError):
    """Kafka is unreachable, a topic is missing, or a read or write failed for good."""


class WindowLengthError(LakeError):
    """A lake built with one window length was asked to count with another.

    ``existing_us`` and ``requested_us`` let a caller say which setting to change.
    """

    def __init__(self, message: str, *, existing_us: int, requested_us: int) -> None:
        super().__init__(message)
        self.existing_us = existing_us
        self.requested_us = requested_us


class RetentionFloorError(ConfigError):
    """A retention below the floor that keeps recent table versions readable."""

    def __init__(self, *, requested: str, floor: str, why: str) -> None:
        super().__init__(f"a retention of {requested} is below the {floor} retention floor: {why}")
        self.requested = requested
        self.floor = floor
        self.why = why
