"""The settings, and the daemon built from them.

``config`` holds ``Settings`` (one YAML file plus ``STREAM_AE_*`` environment variables,
validated by pydantic). ``daemon`` is the only reader of ``Settings`` in the daemon: it
hands each piece its plain values (``model_loader``: how checkpoints are served, the
daemon's first one and every hot swap; ``Daemon``: the Kafka ends, the state store, the
loop, the metrics server and the lifecycle).
"""
