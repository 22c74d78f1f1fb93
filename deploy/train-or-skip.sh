#!/bin/sh
# The trainer container's entry point: trains $CHECKPOINT from $TRAIN_DATA, unless a
# checkpoint is already there (provided by the user, or trained on an earlier `up`).
#   FORCE_TRAIN=1   train even when the checkpoint exists
#   TRAIN_ARGS      extra `stream-ae train` flags, e.g. "--epochs 20 --model deep"
# Without a dataset at $TRAIN_DATA it trains on synthetic card-shaped transactions, as
# `stream-ae demo` does (the replayer then replays the same), and says what to mount instead.
set -eu
checkpoint=${CHECKPOINT:-/models/model.pt}
if [ -s "$checkpoint" ] && [ "${FORCE_TRAIN:-0}" != 1 ]; then
  echo "trainer: $checkpoint is present: serving it, training skipped"
  exit 0
fi
data=${TRAIN_DATA:?TRAIN_DATA is not set}
if [ ! -f "$data" ]; then
  echo "trainer: no dataset at $data: training on synthetic transactions (for your data, mount its folder with STREAM_AE_DATA_DIR and name the file with STREAM_AE_TRAIN_FILE)"
  data=synthetic
fi
models=$(dirname "$checkpoint")
if [ ! -w "$models" ]; then
  echo "trainer: $models is not writable by uid $(id -u): set STREAM_AE_USER=<uid>:<gid> of the folder's owner, or chown it to $(id -u)" >&2
  exit 1
fi
partial="${checkpoint%.pt}.partial.pt"
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
stream-ae train --data "$data" --output "$partial" ${TRAIN_ARGS:-}
mv "$partial" "$checkpoint"   # the detector never sees a half-written file
echo "trainer: wrote $checkpoint"
