#!/usr/bin/env bash
# Sets up stream-ae in ./.venv from nothing: the CPU build of PyTorch first (so that pip does
# not pull the multi-GB CUDA build), then the project with the local broker.
#   bash scripts/setup.sh          # to run the product (stream-ae demo, run, train, ...)
#   bash scripts/setup.sh --test   # also the test tools, Prometheus (Debian package) when root, and
#                                  # Apache Kafka's jars (Maven Central; Java 17 and Maven from Debian when root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras="local-broker"
[ "${1:-}" = "--test" ] && extras="local-broker,test"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[${extras}]"

if [ "${1:-}" = "--test" ] && ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Prometheus and promtool check the deploy/ configuration and serve the dashboard test
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
      || echo "setup: could not install Prometheus; the Prometheus tests will be skipped" >&2
  else
    echo "setup: Prometheus is not installed (apt-get install prometheus); its tests will be skipped" >&2
  fi
fi
if [ "${1:-}" = "--test" ]; then
  if ! { command -v java && command -v mvn; } >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openjdk-17-jre-headless maven >/dev/null) || echo "setup: could not install Java 17 and Maven" >&2
    fi
  fi
  if { command -v java && command -v mvn; } >/dev/null 2>&1; then
    # Apache Kafka for the tests (STREAM_AE_TEST_BROKER=apache), into ~/.cache/stream-ae once
    .venv/bin/python -m tests.apache_kafka fetch
  else
    echo "setup: Java 17 and Maven are not installed; the tests can only run against Tansu" >&2
  fi
fi
if ! .venv/bin/python -c "import confluent_kafka" 2>/dev/null; then
  echo "setup: confluent-kafka is not installed (.venv/bin/pip install -e '.[confluent]' adds it):" \
       "kafka.client stays kafka-python, and its tests and bench figures are skipped" >&2
fi
echo "setup: ready; activate with: . .venv/bin/activate"
