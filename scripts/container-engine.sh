#!/usr/bin/env bash
# A container engine and Docker Compose for the docker-compose stack and its tests
# (tests/stack), on a Debian machine without Docker's engine: Debian's podman behind the
# Docker API, and Docker Compose built from its Go module (the Go module proxy), used
# through the machine's Docker CLI. Where Docker's own engine and compose answer, it changes
# nothing; run again, it only starts what is not running.
#   bash scripts/container-engine.sh                        # as root
#   export DOCKER_HOST=unix:///run/podman/podman.sock       # what it prints at the end
# What it does, each step only when needed:
#   - apt-get install podman runc netavark aardvark-dns iptables mmdebstrap (mmdebstrap:
#     deploy/build-images.sh's base image);
#   - /etc/containers/containers.conf.d/stream-ae.conf: runc (crun fails on a hybrid cgroup
#     host), no default ulimits (the runtime's setrlimit is refused in a container), cgroupfs
#     and file events (no systemd);
#   - docker compose v5.6.0 from github.com/docker/compose/v5 (go build, cached in
#     ~/.cache/stream-ae) as a Docker CLI plugin (~/.docker/cli-plugins);
#   - `podman system service` on /run/podman/podman.sock, and where there is no systemd to
#     schedule health checks, deploy/podman-healthchecks.sh beside it (logs in /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
SOCKET=/run/podman/podman.sock
COMPOSE_VERSION=v5.6.0
CACHE=${STREAM_AE_CACHE:-$HOME/.cache/stream-ae}

if docker compose version >/dev/null 2>&1 \
   && ! docker version --format '{{range .Server.Components}}{{.Name}} {{end}}' 2>/dev/null | grep -q Podman \
   && docker info >/dev/null 2>&1; then
  echo "container-engine: Docker answers (DOCKER_HOST=${DOCKER_HOST:-default}) and has compose: nothing to do"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "container-engine: needs root and apt-get to install podman; install Docker or podman by hand" >&2
  exit 1
fi

missing=()
for tool in podman runc iptables mmdebstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "container-engine: installing podman and its runtime from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc netavark aardvark-dns iptables mmdebstrap >/dev/null
fi
mkdir -p /etc/containers/containers.conf.d
cat >/etc/containers/containers.conf.d/stream-ae.conf <<'EOF'
# written by stream-ae's scripts/container-engine.sh
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

if ! docker compose version >/dev/null 2>&1; then
  binary=$CACHE/docker-compose-$COMPOSE_VERSION
  if [ ! -x "$binary" ]; then
    echo "container-engine: building Docker Compose $COMPOSE_VERSION from its Go module"
    command -v go >/dev/null || { echo "container-engine: Go is needed to build Docker Compose" >&2; exit 1; }
    # `go install module@version` refuses a go.mod with exclude directives: build in the module's folder
    source=$(GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v5@$COMPOSE_VERSION" \
      | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    mkdir -p "$CACHE"
    (cd "$source" && GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" -o "$binary.partial" ./cmd)
    mv "$binary.partial" "$binary"
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  cp "$binary" "$HOME/.docker/cli-plugins/docker-compose"
fi

export DOCKER_HOST=unix://$SOCKET
if ! docker info >/dev/null 2>&1; then
  mkdir -p "$(dirname "$SOCKET")"
  nohup podman system service --time=0 "unix://$SOCKET" >/tmp/podman-service.log 2>&1 &
  for _ in $(seq 50); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { echo "container-engine: podman's service does not answer (/tmp/podman-service.log)" >&2; exit 1; }
fi
if [ ! -d /run/systemd/system ] && ! pgrep -f podman-healthchecks.sh >/dev/null; then
  nohup sh deploy/podman-healthchecks.sh >/tmp/podman-healthchecks.log 2>&1 &
  echo "container-engine: no systemd: deploy/podman-healthchecks.sh runs the health checks"
fi
echo "container-engine: $(podman --version), $(docker compose version); now:"
echo "  export DOCKER_HOST=unix://$SOCKET"
