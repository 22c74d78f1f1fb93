"""The Kafka ends: reading micro-batches as columns, sending records, committing offsets.

``ends`` holds the contracts the pipeline relies on (``Source``, ``Sink``, ``Delivery``),
``records`` the consumed micro-batch as columns, ``options`` the plain values the ends are
built from, and ``consuming`` what both sources share (batching, start of reading, failed
commits); ``backends`` picks the client library (``kafka_python/`` or ``confluent/``, a
``source`` and a ``sink`` each). Beside them: ``topics`` (administration, reading topics
back), ``state_store`` (threshold state in a compacted topic) and ``local_broker`` (a local
broker for the demo and the tests). Nothing here imports the rest of ``stream_ae``.
"""
