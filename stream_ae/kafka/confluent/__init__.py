"""The confluent-kafka backend (librdkafka; ``pip install 'stream-ae[confluent]'``), chosen
with ``kafka.client: confluent-kafka``: :mod:`.source` holds
:class:`~.source.ConfluentSource`, and :mod:`.sink` holds :class:`~.sink.ConfluentSink`,
with the same semantics as the kafka-python backend (manual commits, idempotent
``acks=all`` batches, the same partition for a key). Both fulfil :mod:`stream_ae.kafka.ends`;
importing either module needs confluent-kafka installed."""
