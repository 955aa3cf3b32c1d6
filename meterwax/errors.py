"""The exception tree: one root, so callers can catch everything meterwax raises on purpose."""


class MeterwaxError(Exception):
    """Root of every error meterwax raises deliberately."""


class ConfigError(MeterwaxError):
    """A setting, flag or environment variable has a value meterwax cannot use."""


class LakeError(MeterwaxError):
    """The lake is missing, unreadable, or was written with incompatible settings."""


class BrokerError(MeterwaxError):
    """Kafka is unreachable, a topic is missing, or a read or write failed for good."""
