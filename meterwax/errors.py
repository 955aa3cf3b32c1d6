"""The exception tree: one root, so callers can catch everything meterwax raises on purpose."""


class MeterwaxError(Exception):
    """Root of every error meterwax raises deliberately."""


class ConfigError(MeterwaxError):
    """A setting, flag or environment variable has a value meterwax cannot use."""


class LakeError(MeterwaxError):
    """The lake is missing, unreadable, or was written with incompatible settings."""


class BrokerError(MeterwaxError):
    """Kafka is unreachable, a topic is missing, or a read or write failed for good."""


class RecoveryStoreError(MeterwaxError):
    """A recovery store this run cannot use: another run holds it, or it does not fit the cluster.

    Resuming a store that belongs to another process, another cluster size or an older state
    would silently break exactly-once, so these are refused before anything runs.
    """


class StoreBusyError(RecoveryStoreError):
    """Another run holds the recovery store: two runs on one store corrupt it."""

    def __init__(self, directory: str, holder: str) -> None:
        super().__init__(
            f"recovery store {directory} is held by another run ({holder}): two runs on one "
            "store corrupt it; stop the other run, or give this one its own store"
        )
        self.directory = directory
        self.holder = holder


class ClusterStoppedError(MeterwaxError):
    """A process of a multi-process run lost a peer: the whole cluster stops and restarts."""


class ClusterAddressError(MeterwaxError):
    """A process of a multi-process run cannot listen on its own address (already in use)."""


class SourceChangedError(MeterwaxError):
    """An input the lake counted part of has changed in that part: it cannot be continued."""


class LakeRulesError(LakeError):
    """A lake was asked to count with other rules than the ones it was created with.

    ``differences`` maps each rule (``window_us``, ``allowed_lateness_us``…) to the lake's
    value and the requested one, so a caller can say which of its settings to change.
    """

    def __init__(self, message: str, differences: dict[str, tuple[int | None, int | None]]) -> None:
        super().__init__(message)
        self.differences = differences


class RetentionFloorError(ConfigError):
    """A retention below the floor that keeps recent table versions readable."""

    def __init__(self, *, requested: str, floor: str, why: str) -> None:
        super().__init__(f"a retention of {requested} is below the {floor} retention floor: {why}")
        self.requested = requested
        self.floor = floor
        self.why = why
