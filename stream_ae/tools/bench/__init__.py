"""``stream-ae bench``: throughput and latency of the detector, all in one run on one topic.

One topic is filled once with ``events`` records (JSON or the compact binary payload,
from the synthetic transaction set or ``--data``), and then, for each Kafka client
(kafka-python, confluent-kafka):

1. **consume limit**: the client's own source
   (:func:`stream_ae.kafka.backends.make_source`, same settings as the detector's) reads
   the whole topic in a fresh consumer group and discards the client's record objects as
   they come (``poll_records``: no columns built, nothing decoded); events/s from the end
   of the first batch to the last record (so the group join is left out);
2. **detector**: the real daemon (:class:`stream_ae.service.daemon.Daemon` running its
   :class:`stream_ae.pipeline.loop.StreamLoop`, in a thread, on ``torch_threads`` threads
   and the daemon's default ``consumer.batch_budget_ms`` unless given) reads the same
   topic in another fresh group; events/s over the same span, and
   each stage's share of the loop's time over that span (from
   ``stream_ae_stage_seconds_total``);

   the two alternate, ``rounds`` detector runs each bracketed by consume-limit runs
   (L D L D … L): a round's ratio is its detector's events/s over the mean of the two
   limits around it, and the reported figures are medians over the rounds, so that a
   drift or a burst in the machine's load (other processes share its cores) favours
   neither side. The bench's process freezes its start-up heap out of the garbage
   collector first, as the daemon does
   (:func:`stream_ae.service.daemon.freeze_long_lived_objects`);
3. **latency**: with the detector caught up, a paced producer in a separate process (so
   that its work does not share the detector's GIL; librdkafka with its default 5 ms
   linger, see :data:`PRODUCER_LINGER_MS`) appends events at 50% and then 90%
   of the detector's sustained rate, and at a fixed 2,000 events/s (the demo's rate, far
   from saturation); end-to-end latency per event is the detector's own
   measure (record timestamp, set by the producer at send time, to the acknowledgement
   of the batch's output), given as p50/p95/p99.

Then, once: a **per-event baseline** (the same model in a naive loop: kafka-python
consumer iterated record by record, ``json.loads``, one model call per event, the
alert sent and acknowledged, a synchronous commit per event; that is the detector's
at-least-once promise kept one event at a time), plus the model alone called once per
event without Kafka; **scale-out** (two detector processes in one consumer group,
aggregate events/s); and the **accuracy** of bf16 autocast and ``torch.compile`` against
fp32 on the held-out rows (largest absolute score difference, AUC-ROC change). The
**score heads** serve the default memory-bank score and the same model's reconstruction
error in alternating runs, and time the scorer alone on one torch thread and on all.

The targets (each reported with its value, bound and verdict) are those of the default
score on a CPU (docs/performance.md, "The default score on a CPU"): kafka-python and
confluent-kafka at least 0.4× their consume limits, confluent-kafka faster than
kafka-python, p99 latency at most 100 ms at 50% load and at most ``max_wait_ms`` + 30 ms at
2,000 events/s, the detector at least 50× the per-event baseline, and the memory bank's
score stage at most 10 µs an event. A client that is not installed (confluent-kafka comes
with the ``confluent`` extra) is skipped, and the table says so.

Quantiles are numpy's default (linear interpolation, Hyndman & Fan type 7).

Modules: ``options`` (what to measure), ``producers``, ``throughput``, ``latency``,
``baselines``, ``report`` (summary and tables) and ``run`` (:func:`run.run_bench`, all of it in order).
"""
