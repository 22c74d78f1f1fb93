"""The daemon's path: one micro-batch from the source to the commit, and what runs beside it.

``loop`` holds ``StreamLoop``, whose ``step`` runs the stages in order: ``codec`` (records
to float32 events, bad records to the dead letter), the detector of the model in service
(:mod:`stream_ae.model.detector`), ``threshold/`` (flags and per-partition state),
``alerts`` (the alert, score, dead-letter and state records), then the sink and the
commit. Beside the loop: ``keyed_state`` (state per (partition, key), saved with the
offsets), ``ownership`` (partitions held, their keyed state restored, readiness),
``serving`` (the model in service and its loader), ``hot_swap`` (a new checkpoint between
batches), ``housekeeping`` (broker reachable, consumer lag) and ``timing`` (time per
stage). Nothing is imported here: import the sub-module you need.
"""
