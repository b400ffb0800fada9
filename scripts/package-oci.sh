#!/usr/bin/env bash
# Packages the built filter as an OCI image that Istio can pull (`make oci`), and prints what to
# pin in the WasmPlugin / TrafficExtension / EnvoyFilter (envoy/istio/).
#
#   ./scripts/package-oci.sh                         build gateway-aggregator:<version> locally
#   REGISTRY=ghcr.io/acme ./scripts/package-oci.sh   ... and push ghcr.io/acme/gateway-aggregator:<version>
#   SHA_ONLY=1 ./scripts/package-oci.sh              only print the .wasm's sha256 (no builder needed)
#
# Environment:
#   REGISTRY   registry/namespace to push to; unset: build locally only, no push
#   IMAGE      image name (default gateway-aggregator)
#   VERSION    tag (default: the version in Cargo.toml)
#   BUILDER    docker | podman | buildah (default: the first one found that works)
#   WASM       the filter (default target/wasm32-wasip1/release/gateway_aggregator.wasm; `make build`)
#
# The image (envoy/istio/Dockerfile): FROM scratch, one layer, /plugin.wasm - the layout
# istio-agent reads. It is built for linux/amd64 without attestations, so a push is one plain
# manifest (istio-agent resolves image indexes to their linux/amd64 entry).
#
# What to pin:
#   - url: oci://...  -> the image MANIFEST digest, printed after a push: Istio compares `sha256`
#                        with the manifest digest for OCI images, not with the .wasm's hash.
#                        Or put it in the URL: oci://REGISTRY/IMAGE@sha256:<digest>.
#   - url: https://... or file://... (the bare .wasm) -> the .wasm's sha256, always printed.
#
# Exit status: 0 done; 2 the .wasm is missing or invalid; 3 no working image builder (the
# .wasm's sha256 has been printed all the same).
set -euo pipefail

cd "$(dirname "$0")/.."

WASM=${WASM:-target/wasm32-wasip1/release/gateway_aggregator.wasm}
IMAGE=${IMAGE:-gateway-aggregator}
DOCKERFILE=envoy/istio/Dockerfile
# The path the Dockerfile copies from, relative to its build context.
CONTEXT_WASM=target/wasm32-wasip1/release/gateway_aggregator.wasm

say() { echo "package-oci: $*"; }
fail() {
    local status=$1
    shift
    echo "package-oci: $*" >&2
    exit "$status"
}

if [[ -z ${VERSION:-} ]]; then
    VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
    [[ -n $VERSION ]] || fail 2 "cannot read the version from Cargo.toml (set VERSION)"
fi

# --- the .wasm itself: checked and hashed without any container tooling ---------------------
[[ -f $WASM ]] || fail 2 "$WASM not found: run 'make build' first"
magic=$(head -c 4 "$WASM" | od -An -tx1 | tr -d ' \n')
[[ $magic == 0061736d ]] || fail 2 "$WASM is not a WebAssembly module (magic bytes $magic)"

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    elif command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -r "$1" | cut -d' ' -f1
    else
        fail 2 "no sha256sum, shasum or openssl to hash $WASM"
    fi
}
wasm_sha=$(sha256_of "$WASM")
say "$WASM ($(wc -c <"$WASM" | tr -d ' ') bytes)"
say "wasm sha256: $wasm_sha"
say "  pin it as 'sha256: $wasm_sha' for a url: https://... or file://... that serves this .wasm"

if [[ -n ${SHA_ONLY:-} ]]; then
    exit 0
fi

# --- the image --------------------------------------------------------------------------------
builder_works() {
    case $1 in
        docker) command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 ;;
        podman) command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1 ;;
        buildah) command -v buildah >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

if [[ -n ${BUILDER:-} ]]; then
    builder_works "$BUILDER" || fail 3 "BUILDER=$BUILDER is not installed or cannot reach its engine"
else
    for candidate in docker podman buildah; do
        if builder_works "$candidate"; then
            BUILDER=$candidate
            break
        fi
    done
    if [[ -z ${BUILDER:-} ]]; then
        if command -v docker >/dev/null 2>&1; then
            why="docker is installed but its engine is not reachable ('docker info' failed)"
        else
            why="none of docker, podman or buildah is installed"
        fi
        fail 3 "cannot build the image: $why. Install one (or start the Docker engine) and rerun; the .wasm's sha256 above is still valid for https:// or file:// URLs."
    fi
fi

local_ref="$IMAGE:$VERSION"
remote_ref=""
if [[ -n ${REGISTRY:-} ]]; then
    remote_ref="${REGISTRY%/}/$IMAGE:$VERSION"
fi

# A context holding only the .wasm, at the path the Dockerfile copies from.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/$(dirname "$CONTEXT_WASM")"
cp "$WASM" "$context/$CONTEXT_WASM"

say "building $local_ref with $BUILDER ($DOCKERFILE)"
case $BUILDER in
    docker)
        if docker buildx version >/dev/null 2>&1; then
            # --load: into the local image store; no provenance/SBOM, so a push is one manifest.
            docker buildx build --load --platform linux/amd64 --provenance=false --sbom=false \
                -f "$DOCKERFILE" -t "$local_ref" "$context"
        else
            docker build --platform linux/amd64 -f "$DOCKERFILE" -t "$local_ref" "$context"
        fi
        ;;
    podman)
        podman build --platform linux/amd64 -f "$DOCKERFILE" -t "$local_ref" "$context"
        ;;
    buildah)
        buildah build --platform linux/amd64 -f "$DOCKERFILE" -t "$local_ref" "$context"
        ;;
esac
say "built $local_ref"

if [[ -z $remote_ref ]]; then
    say "not pushed (set REGISTRY=<registry>/<namespace> to push)."
    say "after a push, pin the manifest digest it prints, e.g. url: oci://<registry>/$IMAGE@sha256:<digest>"
    exit 0
fi

say "pushing $remote_ref"
digest=""
case $BUILDER in
    docker)
        docker tag "$local_ref" "$remote_ref"
        docker push "$remote_ref"
        # RepoDigests holds <repo>@sha256:<manifest digest> once pushed.
        digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$remote_ref" |
            sed -n "s|^${REGISTRY%/}/$IMAGE@||p" | head -n 1)
        ;;
    podman | buildah)
        digestfile="$context/digest"
        "$BUILDER" push --digestfile "$digestfile" "$local_ref" "docker://$remote_ref"
        digest=$(cat "$digestfile")
        ;;
esac

if [[ $digest != sha256:* ]]; then
    say "pushed $remote_ref, but could not read its manifest digest: look it up in the registry"
    exit 0
fi
say "pushed $remote_ref"
say "image manifest digest: $digest"
say "  pin it in envoy/istio/*.yaml as either"
say "    url: oci://$remote_ref   with   sha256: ${digest#sha256:}"
say "    url: oci://${REGISTRY%/}/$IMAGE@$digest"
