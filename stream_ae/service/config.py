"""Configuration: pydantic models, one YAML file plus ``STREAM_AE_...`` environment overrides.

Precedence, highest first: overrides given in code (the CLI's flags), environment
variables (``STREAM_AE_<SECTION>__<FIELD>``, e.g. ``STREAM_AE_CONSUMER__MAX_BATCH_SIZE=2048``;
a list also as comma-separated text, ``STREAM_AE_TOPICS__INPUT=events,payments``), the YAML
file, the defaults below. Every value is validated when the settings are loaded, so a
wrong value fails at start-up with a one-line message that names the field.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from stream_ae.kafka.options import Connection, ConsumerOptions, ProducerTuning, TransactionOptions
from stream_ae.model.device import DEVICE_PATTERN
from stream_ae.model.kinds import EventKind
from stream_ae.model.series import SeriesSettings
from stream_ae.pipeline.threshold.adaptive import DEFAULT_FALSE_ALARM_RATE

ENV_PREFIX = "STREAM_AE_"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _listed(value: Any) -> Any:
    """A list given as text (an environment variable): a JSON list, or comma-separated items."""
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError(f"{value!r} is neither a JSON list nor comma-separated names") from None
    return [item.strip() for item in value.split(",") if item.strip()]


# a list field the environment may give as "a,b" as well as '["a", "b"]'
TextList = Annotated[list[str], NoDecode, BeforeValidator(_listed)]


class KafkaSettings(_Section):
    """How to reach the cluster. Security fields pass straight through to the Kafka clients."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client: Literal["kafka-python", "confluent-kafka"] = Field(
        "kafka-python", description="client library of the source and sink; confluent-kafka "
        "needs the optional extra: pip install 'stream-ae[confluent]'")
    client_id: str = "stream-ae"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    max_request_bytes: int = Field(
        ProducerTuning.max_request_bytes, ge=1024, description="largest record the daemon produces "
        "(bytes); keep it at or below the brokers' message.max.bytes and the output topics' "
        "max.message.bytes: a dead letter beyond it is written as a reference, and a record the "
        "broker refuses as too large is counted, not sent again")

    def connection(self) -> Connection:
        """The plain values the Kafka ends are built from (the password unwrapped, paths as str)."""
        return Connection(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
            security_protocol=self.security_protocol, sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password.get_secret_value() if self.sasl_password else None,
            ssl_cafile=_text(self.ssl_cafile), ssl_certfile=_text(self.ssl_certfile),
            ssl_keyfile=_text(self.ssl_keyfile))


class TopicSettings(_Section):
    """Topic names. ``scores`` is optional: when set, every event's score is published there.

    ``state`` is the compacted topic holding each input partition's threshold state, so that
    a restarted daemon, or the replica a partition moves to, goes on with the same
    threshold; None keeps the state in memory only.
    """

    input: TextList = Field(default_factory=lambda: ["events"], min_length=1)
    alerts: str = "alerts"
    dead_letter: str = "events-dead-letter"
    scores: str | None = None
    state: str | None = "stream-ae-threshold-state"

    def outputs(self) -> list[str]:
        """The topics the daemon writes to: alerts, dead letters, and scores and state when set."""
        return [topic for topic in (self.alerts, self.dead_letter, self.scores, self.state) if topic]


class ConsumerSettings(_Section):
    """Consumer-group membership and micro-batching."""

    group_id: str = "stream-ae"
    max_batch_size: int = Field(4096, gt=0, le=1_000_000, description="events per micro-batch")
    max_wait_ms: int = Field(100, ge=0, le=60_000, description="longest wait for a batch's first "
                             "records; a batch is all the client holds once some have come")
    batch_budget_ms: float | None = Field(
        100.0, gt=0, le=60_000, description="time the loop may spend handling one batch (decode, "
        "score, send); the loop measures its cost per event and caps the next batches at "
        "budget / cost events (at most max_batch_size); null: batches of max_batch_size")
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    fetch_max_wait_ms: int = Field(50, ge=0)
    max_partition_fetch_bytes: int = Field(4 * 1024 * 1024, gt=0)
    static_partitions: TextList | None = Field(
        None, description="'topic:partition' entries to read instead of joining a group "
        "rebalance; offsets are still committed under group_id")

    @field_validator("static_partitions")
    @classmethod
    def _topic_colon_partition(cls, entries: list[str] | None) -> list[str] | None:
        for entry in entries or []:
            topic, _, number = entry.rpartition(":")
            if not topic or not number.isdigit():
                raise ValueError(f"{entry!r} is not of the form 'topic:partition'")
        return entries

    def options(self, read_committed: bool = False) -> ConsumerOptions:
        """The plain values a source is built from; ``static_partitions`` as ``(topic, partition)``
        pairs (None to join the group's rebalances); ``read_committed`` as given (see
        :meth:`Settings.consumer_options`)."""
        static = ([(topic, int(number)) for topic, _, number in
                   (entry.rpartition(":") for entry in self.static_partitions)]
                  if self.static_partitions else None)
        return ConsumerOptions(
            group_id=self.group_id, max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_ms,
            auto_offset_reset=self.auto_offset_reset, session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms, fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes, static_partitions=static,
            read_committed=read_committed)

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> ConsumerSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be lower than session_timeout_ms")
        return self


class DeliverySettings(_Section):
    """The delivery guarantee of the alerts, scores, dead letters and threshold state.

    ``at_least_once`` (the default): a batch's output is acknowledged, then its offsets are
    committed; a crash reads the last few batches again, and their output comes again.
    ``exactly_once``: each batch's output and its consumer offsets commit in one Kafka
    transaction (KIP-98), fenced by the consumer group's generation (KIP-447); a reader
    with ``isolation.level=read_committed`` sees each record once. Needs a broker that
    isolates transactions (Apache Kafka 2.5 or later).

    ``transactional_id`` names this instance's transactional producer. It must differ
    between instances running at the same time and should stay the same when an instance
    restarts: then the restarted producer aborts its predecessor's open transaction at
    once (``init_transactions``), instead of leaving it to ``transaction_timeout_ms``.
    Default: ``<consumer.group_id>-<kafka.client_id>-<host name>``; set it per instance
    where several share a host (e.g. the pod name of a StatefulSet).
    """

    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    transactional_id: str | None = Field(
        None, min_length=1, description="exactly_once: this instance's transactional.id "
        "(default: <consumer.group_id>-<kafka.client_id>-<host name>)")
    transaction_timeout_ms: int = Field(
        10_000, ge=1000, le=900_000, description="exactly_once: the broker aborts a transaction left "
        "open longer (a frozen or dead instance's); at most the broker's transaction.max.timeout.ms")

    @property
    def exactly_once(self) -> bool:
        """Whether the output and offsets commit in one transaction."""
        return self.guarantee == "exactly_once"


class EventSettings(_Section):
    """How records are decoded. ``kind: auto`` takes the kind the model was trained on;
    ``kind: samples`` reads sample records of keyed series (the ``samples`` section), and
    serves no checkpoint."""

    kind: Literal["auto", "samples"] | EventKind = "auto"
    id_field: str = "id"
    samples_field: str = "samples"
    max_record_bytes: int = Field(1_000_000, gt=0, description="larger records are dead-lettered")


class SampleSettings(_Section):
    """Sample streams (``events.kind: samples``): windows per series key, a detector per series
    fitted on its own warm-up (:mod:`stream_ae.model.series` explains each setting)."""

    channels: int = Field(1, ge=1, le=1024, description="values per sample")
    series_field: str | None = Field(None, description="JSON field naming the series; null: the record key")
    length: int = Field(SeriesSettings.length, ge=1, le=100_000, description="samples per window")
    stride: int = Field(1, ge=1, description="samples between the ends of consecutive windows (at most length)")
    warmup: int = Field(SeriesSettings.warmup, ge=2,
                        description="samples of a series learned from before its windows are scored")
    max_series: int = Field(100_000, ge=1, description="series held at most; the least recently seen is evicted")
    floor: float = Field(SeriesSettings.floor, ge=0)
    drift_samples: int = Field(SeriesSettings.drift_samples, ge=1)
    drift_floor: float = Field(SeriesSettings.drift_floor, ge=0)
    season_correlation: float = Field(SeriesSettings.season_correlation)
    season_coverage: float = Field(SeriesSettings.season_coverage, ge=1)
    season_weight: float = Field(SeriesSettings.season_weight, ge=0)
    history: int = Field(SeriesSettings.history, ge=1, description="past scores a score is ranked among")
    flag_level: float = Field(SeriesSettings.flag_level, gt=0, le=1,
                              description="score (in [0, 1]) from which a window is an alert")
    quiet_share: float = Field(SeriesSettings.quiet_share, ge=0,
                               description="samples scored 0 after an alert, as a share of the warm-up")
    warmup_of: dict[str, Annotated[int, Field(ge=2)]] = Field(
        default_factory=dict, description="series whose warm-up differs from warmup (a benchmark's "
        "probationary periods, say), by series key")

    @model_validator(mode="after")
    def _windows_cover_the_warmup_and_every_sample(self) -> SampleSettings:
        if self.warmup <= self.length:
            raise ValueError(f"warmup ({self.warmup}) must hold more than one window of length ({self.length})")
        if self.stride > self.length:
            raise ValueError(f"stride ({self.stride}) must be at most length ({self.length}): windows cover "
                             "every sample")
        return self

    def detector(self) -> SeriesSettings:
        """The per-series detector's settings."""
        return SeriesSettings(**{name.name: getattr(self, name.name) for name in dataclasses.fields(SeriesSettings)})


class ModelSettings(_Section):
    """Which checkpoint to serve and where."""

    checkpoint: Path = Path("model.pt")
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    compile: bool = Field(False, description="torch.compile the scoring step (CUDA graphs on cuda)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16 runs the model under autocast; errors are taken in float32")
    bucket_batches: bool | None = Field(
        None, description="pad each batch to the next power of two so that shapes repeat; "
        "default: with compile or on cuda, where repeated shapes pay")
    threads: int | None = Field(
        None, ge=1, le=1024, description="torch intra-op threads that score; null: one per CPU "
        "core this process may run on (its affinity, e.g. a container's cpuset)")
    reload_check_s: float = Field(
        5.0, ge=0, description="seconds between checks of the checkpoint file for a new "
        "version (0: only on SIGHUP)")


class ThresholdSettings(_Section):
    """Adaptive threshold = mean + k * std of the anomaly score, per partition.

    ``scale: log`` (the default) takes the mean and std of the logarithm of the score:
    scores are heavy-tailed, and a few large ones among normal events inflate a plain std
    until the bar sits above most anomalies.

    ``false_alarm_rate`` (the default, 5 %): k is derived from the checkpoint's validation
    scores so that the starting threshold flags that share of normal events
    (``stream_ae.pipeline.threshold.adaptive.calibrated_k``). Set it to null to use ``k``
    as given (e.g. the classic k = 3).
    """

    false_alarm_rate: float | None = Field(
        DEFAULT_FALSE_ALARM_RATE, gt=0, lt=0.5,
        description="share of normal events flagged at the start; null: use k as given")
    k: float = Field(3.0, gt=0, description="the threshold's k when false_alarm_rate is null")
    scale: Literal["log", "linear"] = "log"
    half_life_events: int = Field(20_000, gt=0, description="events for a sample's weight to halve")
    warmup_events: int = Field(500, ge=0, description="events per partition on the seeded threshold")


class AlertSettings(_Section):
    """What an alert carries."""

    top_features: int = Field(3, ge=1, le=32)
    window_segments: int = Field(10, ge=1, description="segments a window is split into for alerts")


class MetricsSettings(_Section):
    """The HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class Settings(BaseSettings):
    """Everything the daemon reads at start-up."""

    # STREAM_AE_TOPICS__SCORES=null sets an optional field to None, as `null` does in the file
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", env_parse_none_str="null"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    samples: SampleSettings = Field(default_factory=SampleSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    threshold: ThresholdSettings = Field(default_factory=ThresholdSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

    def consumer_options(self) -> ConsumerOptions:
        """The source's plain values: ``consumer`` as set, reading ``read_committed`` in
        exactly-once mode (records of aborted transactions skipped)."""
        return self.consumer.options(read_committed=self.delivery.exactly_once)

    def transaction_options(self) -> TransactionOptions | None:
        """The transactional producer's plain values in exactly-once mode; None otherwise."""
        delivery = self.delivery
        if not delivery.exactly_once:
            return None
        transactional_id = (delivery.transactional_id
                            or f"{self.consumer.group_id}-{self.kafka.client_id}-{socket.gethostname()}")
        return TransactionOptions(transactional_id, delivery.transaction_timeout_ms)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # highest first; load_settings puts the file under the environment in init_settings
        return (init_settings, env_settings)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError) -> str:
    """One line: ``invalid configuration: section.field: reason; ...``."""
    faults = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        faults.append(f"{field}: {item['msg']}")
    return "invalid configuration: " + "; ".join(faults)


def _environment() -> dict[str, Any]:
    """The sections the ``STREAM_AE_...`` environment variables set."""
    try:
        return EnvSettingsSource(Settings)()
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc} (check the {ENV_PREFIX}... environment variables)") from None


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load and validate the settings.

    Args:
        path: a YAML file whose top-level keys are the sections above; None for defaults.
        overrides: section dictionaries that take precedence over the environment and
            the file (the command line's flags), e.g. ``consumer={"max_batch_size": 64}``.

    Raises:
        ConfigError: the file is missing or not a mapping, or a value is invalid; the
            message, one line, lists each offending field as ``section.field: reason``.

    Example:
        >>> settings = load_settings(consumer={"max_batch_size": 64})
        >>> settings.consumer.max_batch_size, settings.threshold.k
        (64, 3.0)
        >>> load_settings(threshold={"k": -1})
        Traceback (most recent call last):
        ...
        stream_ae.service.config.ConfigError: invalid configuration: threshold.k: Input should be greater than 0
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        data = loaded or {}
    data = _merge(_merge(data, _environment()), overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
