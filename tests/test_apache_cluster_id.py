"""The KRaft cluster id the Apache Kafka launcher formats its nodes with (no Java needed)."""

from __future__ import annotations

import base64
import re

from tests.apache_kafka import cluster_id


def test_a_cluster_id_is_16_random_bytes_that_never_reads_as_an_option():
    # one base64url id in 64 starts with "-", which kafka-storage's parser takes for an
    # option ("argument --cluster-id/-t: expected one argument"; seen in CI)
    ids = [cluster_id() for _ in range(5000)]
    assert not [identity for identity in ids if identity.startswith("-")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", identity) for identity in ids)
    assert all(len(base64.urlsafe_b64decode(identity + "==")) == 16 for identity in ids[:100])
    assert len(set(ids)) == len(ids)
