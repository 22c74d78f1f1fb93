#!/bin/sh
# The trainer container's entry point: trains $CHECKPOINT from $TRAIN_DATA, unless a
# checkpoint is already there (provided by the user, or trained on an earlier `up`).
#   FORCE_TRAIN=1   train even when the checkpoint exists
#   TRAIN_ARGS      extra `stream-ae train` flags, e.g. "--epochs 20 --model deep"
set -eu
checkpoint=${CHECKPOINT:-/models/model.pt}
if [ -s "$checkpoint" ] && [ "${FORCE_TRAIN:-0}" != 1 ]; then
  echo "trainer: $checkpoint is present: serving it, training skipped"
  exit 0
fi
if [ ! -f "${TRAIN_DATA:?TRAIN_DATA is not set}" ]; then
  echo "trainer: no checkpoint at $checkpoint and no dataset at $TRAIN_DATA" >&2
  echo "trainer: mount a dataset folder with STREAM_AE_DATA_DIR and name the file with STREAM_AE_TRAIN_FILE," >&2
  echo "trainer: or provide a checkpoint with STREAM_AE_MODELS=<folder holding model.pt>" >&2
  exit 1
fi
partial="${checkpoint%.pt}.partial.pt"
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
stream-ae train --data "$TRAIN_DATA" --output "$partial" ${TRAIN_ARGS:-}
mv "$partial" "$checkpoint"   # the detector never sees a half-written file
echo "trainer: wrote $checkpoint"
