#!/usr/bin/env bash
# Builds every image the docker-compose stack needs on a machine that reaches no container
# registry, only Debian's packages, PyPI (or a wheelhouse) and Maven Central:
#   stream-ae-base:bookworm   Debian bookworm with Python 3.11 (mmdebstrap, Debian's packages)
#   stream-ae:cpu             the product, from deploy/Dockerfile.cpu on that base, installed
#                             from a wheelhouse (.wheelhouse/, from pip's cache) with no index
#   stream-ae-kafka:<v>       a stand-in for apache/kafka: Debian's OpenJDK 17 and Apache
#                             Kafka's jars from Maven Central (deploy/images/kafka)
#   stream-ae-prometheus:deb  a stand-in for prom/prometheus: Debian's package (deploy/images/prometheus)
# and writes deploy/offline-images.env, which points docker-compose.yml at them:
#   bash deploy/build-images.sh [base|wheelhouse|product|kafka|prometheus ...]   (default: all)
#   docker compose --env-file deploy/offline-images.env up -d
# On a machine with registry access none of this is needed: `docker compose up` builds and
# pulls the usual images.
#
# Each image is labelled with a digest of the files it is built from and skipped when the
# image already there has the same digest; the base tarball, the wheelhouse and the Kafka jars
# are kept in $STREAM_AE_IMAGE_CACHE (default ~/.cache/stream-ae/images). Each step prints
# its wall time, and the end a table of the images' sizes.
#
# Settings (environment): ENGINE (podman or docker; default: podman where installed),
# PYTHON (the interpreter that downloads the wheelhouse: Python 3.11 as in the base image;
# default .venv/bin/python, else python3), KAFKA_VERSION (default 4.4.0),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Needs: mmdebstrap (apt-get install mmdebstrap), Maven and Java (for the Kafka jars), root or
# a rootless engine. Docker builds need BuildKit (the Dockerfile mounts its context in RUN).
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}
CACHE=${STREAM_AE_IMAGE_CACHE:-$HOME/.cache/stream-ae/images}
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
LOG4J2_VERSION=2.25.5
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=2.13.0
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
BASE_IMAGE=localhost/stream-ae-base:bookworm
PRODUCT_IMAGE=localhost/stream-ae:cpu
KAFKA_IMAGE=localhost/stream-ae-kafka:${KAFKA_VERSION}
PROMETHEUS_IMAGE=localhost/stream-ae-prometheus:deb
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,passwd
mkdir -p "$CACHE"

step() {
  local name=$1 start=$SECONDS
  shift
  echo "build-images: ${name}..."
  "$@"
  echo "build-images: ${name} took $((SECONDS - start)) s"
}

# digest of files and strings: the inputs an image is built from
inputs_digest() {
  { for item in "$@"; do
      if [ -d "$item" ]; then
        (cd "$item" && find . -type f ! -name '*.pyc' -printf '%P %s\n' | LC_ALL=C sort)
        (cd "$item" && find . -type f ! -name '*.pyc' ! -name '*.whl' ! -name '*.jar' -print0 \
           | LC_ALL=C sort -z | xargs -0 -r cat)
      elif [ -f "$item" ]; then cat "$item"
      else printf '%s\n' "$item"
      fi
    done; } | sha256sum | cut -c1-16
}

# true when IMAGE exists with the label stream-ae.inputs=DIGEST
up_to_date() {
  local image=$1 digest=$2
  [ "$("$ENGINE" image inspect --format '{{ index .Config.Labels "stream-ae.inputs" }}' "$image" 2>/dev/null)" \
    = "$digest" ]
}

build_base() {
  local digest tarball
  digest=$(inputs_digest "$BASE_PACKAGES" "$DEBIAN_MIRROR" bookworm)
  if up_to_date "$BASE_IMAGE" "$digest"; then echo "  $BASE_IMAGE is up to date"; return; fi
  command -v mmdebstrap >/dev/null || { echo "build-images: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
  tarball="$CACHE/base-$digest.tar"
  if [ ! -s "$tarball" ]; then
    mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" bookworm "$tarball.partial" "$DEBIAN_MIRROR"
    mv "$tarball.partial" "$tarball"
  fi
  "$ENGINE" import --change 'CMD ["/bin/bash"]' --change "LABEL stream-ae.inputs=$digest" \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

# .wheelhouse/: torch, the project's dependencies and setuptools as wheels for the base image's
# Python (3.11), downloaded once into the cache and hard-linked into the build context
build_wheelhouse() {
  local version requirements cached=$CACHE/wheelhouse
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$version" != 3.11 ]; then
    echo "build-images: the wheelhouse needs Python 3.11, the base image's (PYTHON=$PYTHON is $version)" >&2
    exit 1
  fi
  requirements=$("$PYTHON" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
EOF
)
  mkdir -p "$cached"
  # shellcheck disable=SC2086  # one requirement per word
  "$PYTHON" -m pip download --quiet --only-binary=:all: --dest "$cached" \
    "torch==${TORCH_VERSION}" "setuptools>=77" $(echo "$requirements" | tr '\n' ' ')
  rm -rf .wheelhouse
  cp -al "$cached" .wheelhouse 2>/dev/null || cp -a "$cached" .wheelhouse
  echo "  .wheelhouse: $(find .wheelhouse -name '*.whl' | wc -l) wheels, $(du -sh .wheelhouse | cut -f1)"
}

build_product() {
  local digest
  [ -d .wheelhouse ] || build_wheelhouse
  digest=$(inputs_digest deploy/Dockerfile.cpu pyproject.toml README.md stream_ae deploy/config.yaml \
    deploy/train-or-skip.sh .wheelhouse "$("$ENGINE" image inspect --format '{{.Id}}' "$BASE_IMAGE")")
  if up_to_date "$PRODUCT_IMAGE" "$digest"; then echo "  $PRODUCT_IMAGE is up to date"; return; fi
  local ignore=()  # BuildKit reads deploy/Dockerfile.cpu.dockerignore by itself; podman is told
  [ "$ENGINE" = podman ] && ignore=(--ignorefile deploy/Dockerfile.cpu.dockerignore)
  "$ENGINE" build --file deploy/Dockerfile.cpu "${ignore[@]}" \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" --label "stream-ae.inputs=$digest" \
    --tag "$PRODUCT_IMAGE" .
}

# Apache Kafka's broker and tools jars (kafka_2.13, kafka-tools) and a log4j 2 binding
fetch_kafka_jars() {
  local folder=$1
  [ -n "$(ls "$folder"/kafka-tools-*.jar 2>/dev/null)" ] && return
  mkdir -p "$folder"
  cat >"$folder/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stream-ae</groupId><artifactId>kafka-image-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>${LOG4J2_VERSION}</version></dependency>
  </dependencies>
</project>
EOF
  mvn --quiet --batch-mode -f "$folder/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$folder/libs" -DincludeScope=runtime
}

# a build context in the cache: the image's folder under deploy/images plus what it fetched
build_standin() {
  local name=$1 image=$2 context=$CACHE/$1-context digest
  rm -rf "$context"
  cp -a "deploy/images/$name" "$context"
  if [ "$name" = kafka ]; then
    fetch_kafka_jars "$CACHE/kafka-jars-$KAFKA_VERSION"
    cp -al "$CACHE/kafka-jars-$KAFKA_VERSION/libs" "$context/libs" 2>/dev/null \
      || cp -a "$CACHE/kafka-jars-$KAFKA_VERSION/libs" "$context/libs"
  fi
  digest=$(inputs_digest "$context" "$("$ENGINE" image inspect --format '{{.Id}}' "$BASE_IMAGE")")
  if up_to_date "$image" "$digest"; then echo "  $image is up to date"; return; fi
  "$ENGINE" build --build-arg BASE_IMAGE="$BASE_IMAGE" --label "stream-ae.inputs=$digest" \
    --tag "$image" "$context"
}

write_env() {
  cat >deploy/offline-images.env <<EOF
# written by deploy/build-images.sh: docker compose --env-file deploy/offline-images.env up -d
STREAM_AE_IMAGE=$PRODUCT_IMAGE
STREAM_AE_KAFKA_IMAGE=$KAFKA_IMAGE
STREAM_AE_PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE
EOF
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(base wheelhouse product kafka prometheus)
for target in "${targets[@]}"; do
  case "$target" in
    base) step "base image $BASE_IMAGE" build_base ;;
    wheelhouse) step "wheelhouse" build_wheelhouse ;;
    product) step "product image $PRODUCT_IMAGE" build_product ;;
    kafka) step "Kafka image $KAFKA_IMAGE" build_standin kafka "$KAFKA_IMAGE" ;;
    prometheus) step "Prometheus image $PROMETHEUS_IMAGE" build_standin prometheus "$PROMETHEUS_IMAGE" ;;
    *) echo "build-images: unknown target '$target' (base, wheelhouse, product, kafka, prometheus)" >&2; exit 2 ;;
  esac
done
write_env
# the images these builds replaced, untagged now: only ours (labelled), never a user's
"$ENGINE" image prune --force --filter label=stream-ae.inputs >/dev/null
echo "build-images: images (deploy/offline-images.env names them for docker compose):"
for image in "$BASE_IMAGE" "$PRODUCT_IMAGE" "$KAFKA_IMAGE" "$PROMETHEUS_IMAGE"; do
  "$ENGINE" image inspect --format "  {{.Size}} $image" "$image" 2>/dev/null \
    | awk '{ printf "  %-40s %8.0f MB\n", $2, $1 / 1e6 }' || echo "  $image: not built"
done
