"""The settings, and the daemon built from them.

``config`` holds ``Settings`` (one YAML file plus ``STREAM_AE_*`` environment variables,
validated by pydantic). ``daemon`` is the only reader of ``Settings`` in the daemon: it
hands each piece its plain values (``serve``: the decoder, score head and seeded threshold
for a checkpoint; ``Daemon``: the Kafka ends, the loop, the metrics server and the
lifecycle; ``BackgroundDetector``: a ``Daemon`` in a thread, for the demo, the bench and
the tests).
"""
