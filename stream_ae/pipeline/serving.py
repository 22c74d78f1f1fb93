"""The model in service: what serves one checkpoint (decoder, detector, seeded threshold), and
the loader that builds it, for the daemon's start and for every hot swap.

The service (:mod:`stream_ae.service.daemon`) reads the settings into :class:`ServingOptions`
once and hands a :class:`ModelLoader` to whatever needs a model served: the daemon's start
and the hot swap (:mod:`.hot_swap`), which therefore never calls up into the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stream_ae.model.checkpoint import Checkpoint, CheckpointError
from stream_ae.model.detector import Detector, build_detector
from stream_ae.pipeline.alerts import ModelIdentity
from stream_ae.pipeline.codec import EventDecoder
from stream_ae.pipeline.threshold.adaptive import AdaptiveThreshold
from stream_ae.pipeline.threshold.base import Threshold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """Everything that serves one checkpoint: decoder, detector, a freshly seeded threshold.

    Attributes:
        checkpoint: the model's checkpoint.
        decoder: decodes records into the checkpoint's feature layout.
        detector: scores the decoded events (:mod:`stream_ae.model.detector`).
        threshold: the threshold rule, seeded from the checkpoint's validation scores.
        identity: the model's name and checkpoint sha256, as alerts carry them.
    """

    checkpoint: Checkpoint
    decoder: EventDecoder
    detector: Detector
    threshold: Threshold
    identity: ModelIdentity


@dataclass(frozen=True)
class ServingOptions:
    """How a checkpoint is served: the settings ``events``, ``model``, ``threshold`` and
    ``alerts`` as plain values (their meanings are the settings'; docs/configuration.md).

    Attributes:
        event_kind: ``auto``, or the event kind the stream carries (a checkpoint of another
            kind is refused).
        device, compile, precision, bucket: the detector's (:func:`~stream_ae.model.detector.build_detector`).
        max_batch_size: the largest micro-batch (events), for the compiled detector's warm-up.
        top_features, window_segments: what an alert blames.
        id_field, samples_field, max_record_bytes: the decoder's (:class:`~stream_ae.pipeline.codec.EventDecoder`).
        k, false_alarm_rate, scale, half_life_events, warmup_events: the threshold's
            (:meth:`~stream_ae.pipeline.threshold.adaptive.AdaptiveThreshold.from_validation_scores`).
    """

    event_kind: str
    device: str
    compile: bool
    precision: str
    bucket: bool | None
    max_batch_size: int
    top_features: int
    window_segments: int
    id_field: str
    samples_field: str
    max_record_bytes: int
    k: float
    false_alarm_rate: float | None
    scale: str
    half_life_events: int
    warmup_events: int


class ModelLoader:
    """Builds the :class:`ServedModel` of a checkpoint as :class:`ServingOptions` say.

    Args:
        options: how checkpoints are served.
    """

    def __init__(self, options: ServingOptions) -> None:
        self.options = options

    def load(self, checkpoint: Checkpoint) -> ServedModel:
        """The decoder, detector and seeded threshold that serve ``checkpoint``.

        Raises:
            CheckpointError: the checkpoint's event kind differs from ``options.event_kind``.
            ValueError: CUDA asked for but absent.
        """
        options = self.options
        if options.event_kind not in ("auto", checkpoint.kind):
            raise CheckpointError(f"events.kind is {options.event_kind!r} but the checkpoint was "
                                  f"trained on {checkpoint.kind} events")
        detector = build_detector(checkpoint, options.device, options.top_features, options.window_segments,
                                  compile=options.compile, precision=options.precision, bucket=options.bucket)
        if options.compile:
            detector.warm_up(options.max_batch_size)
        decoder = EventDecoder(checkpoint.feature_names, checkpoint.window_length, options.id_field,
                               options.samples_field, options.max_record_bytes, allocate=detector.host_buffer,
                               scaler=(checkpoint.scaler_mean, checkpoint.scaler_std))
        threshold = AdaptiveThreshold.from_validation_scores(
            checkpoint.validation_scores, options.k, options.scale, options.half_life_events,
            options.warmup_events, options.false_alarm_rate)
        if options.false_alarm_rate is not None:
            log.info("threshold: k = %.3f flags %.2g%% of the validation scores (threshold.false_alarm_rate)",
                     threshold.k, 100 * options.false_alarm_rate)
        return ServedModel(checkpoint, decoder, detector, threshold,
                           ModelIdentity(checkpoint.model_name, checkpoint.sha256))
