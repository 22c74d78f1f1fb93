"""The kafka-python backend (the default, pure Python): :mod:`.source` holds
:class:`~.source.KafkaSource`, a consumer in a consumer group reading micro-batches with
manual commits, and :mod:`.sink` holds :class:`~.sink.KafkaSink`, an idempotent
``acks=all`` producer whose batches are acknowledged as a whole, with librdkafka's
partitioning (:class:`~.sink.Crc32Partitioner`). Both fulfil :mod:`stream_ae.kafka.ends`."""
