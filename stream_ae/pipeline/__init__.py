"""The daemon's path: one micro-batch from the source to the commit, and what runs beside it.

``loop`` holds ``Detector``, whose ``step`` runs the stages in order: ``codec`` (records to
float32 events, bad records to the dead letter), ``scoring/`` (the score head),
``threshold/`` (flags and per-partition state), ``alerts`` (the alert, score, dead-letter
and state records), then the sink and the commit. Beside the loop: ``ownership``
(partitions held, saved thresholds restored, readiness), ``hot_swap`` (a new checkpoint
between batches), ``housekeeping`` (broker reachable, consumer lag) and ``timing`` (time
per stage). Nothing is imported here: import the sub-module you need.
"""
