#!/usr/bin/env bash
# Builds the Debian package: muros-had_<version>_<arch>.deb in OUT (default
# the repository's top directory), with nfpm as a Go tool (go.mod's tool
# directive; dist/nfpm.yaml describes the package). The version is
# VERSION if set, else 0.1.0~git<commit date>.<short hash> of HEAD (or
# 0.1.0~dev outside a git checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD}
if [ -z "${VERSION:-}" ]; then
  if git rev-parse --git-dir >/dev/null 2>&1; then
    VERSION="0.1.0~git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S).$(git rev-parse --short=12 HEAD)"
  else
    VERSION=0.1.0~dev
  fi
fi
ARCH=${ARCH:-$(go env GOARCH)}
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
export VERSION ARCH BUILD

# PIE, linked by the system linker with full RELRO (Debian's hardening).
GOARCH=$ARCH CGO_ENABLED=1 go build -trimpath -buildvcs=false -buildmode=pie \
  -ldflags "-s -w -X main.version=$VERSION -linkmode=external -extldflags '-Wl,-z,relro,-z,now'" \
  -o "$BUILD/muros-had" ./cmd/muros-had
gzip -9n -c dist/debian/muros-had.8 >"$BUILD/muros-had.8.gz"

date=$(git log -1 --format=%cD 2>/dev/null || date -R)
cat >"$BUILD/changelog" <<CHANGES
muros-had ($VERSION) unstable; urgency=medium

  * Built from $(git rev-parse --short=12 HEAD 2>/dev/null || echo "a source tree").
    The changes are the project's git history.

 -- MurOS maintainers <maintainers@muros.invalid>  $date
CHANGES
gzip -9n -c "$BUILD/changelog" >"$BUILD/changelog.gz"
mkdir -p "$out"
# nfpm expands the environment in version and arch, not in contents: the
# build directory is written into a copy of the description.
sed "s#\${BUILD}#$BUILD#g" dist/nfpm.yaml >"$BUILD/nfpm.yaml"
go tool nfpm package --config "$BUILD/nfpm.yaml" --packager deb --target "$out/muros-had_${VERSION}_${ARCH}.deb" >&2
echo "$out/muros-had_${VERSION}_${ARCH}.deb"
