#!/bin/sh
# Runs the health checks of the running containers under podman on a host without systemd
# (a container, a CI runner), where podman schedules none by itself and a compose
# `depends_on: condition: service_healthy` would wait forever. Leave it running beside the stack:
#   sh deploy/podman-healthchecks.sh [interval_s] &        (default 10, the stack's intervals)
# scripts/container-engine.sh starts it where needed; with systemd or with Docker it is not.
interval=${1:-10}
while :; do
  for container in $(podman ps --quiet); do
    if podman inspect --format '{{ .Config.Healthcheck }}' "$container" 2>/dev/null | grep -qv '^<nil>$'; then
      podman healthcheck run "$container" >/dev/null 2>&1 || true
    fi
  done
  sleep "$interval"
done
