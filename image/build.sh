#!/usr/bin/env bash
# Build the kres-operator container image from Debian packages, without a registry or Dockerfile:
#   release binaries -> mmdebstrap rootfs (Debian + knot-resolver) -> umoci OCI layout -> skopeo
#   -> $OUT/kres-operator.oci.tar (OCI archive) and $OUT/kres-operator.docker.tar (docker-archive).
#
# OUT defaults to ${CARGO_TARGET_DIR:-<repo>/target}/image (never inside the tracked tree).
# Results are cached under $KRES_IMAGE_CACHE (default /var/cache/kres-operator/image), keyed on
# every input: the two binaries, this folder, the apt sources and the host's apt index of them,
# the suite, SOURCE_DATE_EPOCH. A warm run only builds the binaries (cargo no-op) and copies.
# SOURCE_DATE_EPOCH defaults to the last commit touching the image's inputs: same inputs, same
# rootfs bytes (rootfs.sha256 next to the archives). Needs root (mmdebstrap --mode=root).
# Contract (tests/tests/image.rs): kresd at /usr/sbin/kresd, kres-operator and kresctl on PATH,
# /var/cache/knot-resolver owned by the image's numeric non-root default user.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

die() { echo "image/build.sh: $*" >&2; exit 1; }
log() { echo "image: $*" >&2; }

target=${CARGO_TARGET_DIR:-$repo/target}
out=${KRES_IMAGE_OUT:-$target/image}
cache_root=${KRES_IMAGE_CACHE:-/var/cache/kres-operator/image}
# Only the distribution's own sources: third-party repositories configured on the build host must
# not reach the image.
sources=${KRES_IMAGE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
# kres-cache-gc ships in the knot-resolver package on bookworm.
packages=knot-resolver
name=kres-operator
# Paths of the repository the image is built from (SOURCE_DATE_EPOCH, revision label).
inputs=(image operator crd Cargo.toml Cargo.lock)

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root and chroot hooks)"
for tool in mmdebstrap umoci skopeo; do
  command -v "$tool" >/dev/null || die "$tool is missing (make deps installs it)"
done
[ -r "$sources" ] || die "apt sources $sources not readable (set KRES_IMAGE_APT_SOURCES)"
# shellcheck disable=SC1091
. /etc/os-release
[ "${ID:-}" = debian ] && [ -n "${VERSION_CODENAME:-}" ] ||
  die "the image is built on the Debian release it contains (glibc); this host is ${PRETTY_NAME:-unknown}"
suite=$VERSION_CODENAME

start_ms=$(($(date +%s%N) / 1000000))
${CARGO:-cargo} build --release --locked -p kres-operator --bins
bin=$target/release
for b in kres-operator kresctl; do [ -x "$bin/$b" ] || die "$bin/$b was not built"; done
version=$("$bin/kres-operator" --version | awk '{print $2}')
[ -n "$version" ] || die "cannot read the version of $bin/kres-operator"
ref="localhost/$name:$version"

revision=$(git log -1 --format=%H -- "${inputs[@]}" 2>/dev/null || true)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  [ -n "$revision" ] || die "not a git checkout: set SOURCE_DATE_EPOCH (seconds) for the image's timestamps"
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct -- "${inputs[@]}")
fi
export SOURCE_DATE_EPOCH
revision=${revision:-unknown}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

key=$(
  {
    sha256sum "$bin/kres-operator" "$bin/kresctl" image/*
    echo "suite=$suite packages=$packages sde=$SOURCE_DATE_EPOCH revision=$revision ref=$ref"
    cat "$sources"
    # The host's index of the archive: what apt resolves now. `apt-get update` changes it.
    cat /var/lib/apt/lists/*InRelease 2>/dev/null || true
  } | sha256sum | cut -c1-16
)
cached=$cache_root/$key

publish() {
  mkdir -p "$out"
  for f in kres-operator.oci.tar kres-operator.docker.tar rootfs.sha256 packages.txt build-info; do
    cp -f "$cached/$f" "$out/$f.tmp" && mv -f "$out/$f.tmp" "$out/$f"
  done
  touch "$cached"
  local ms=$(($(date +%s%N) / 1000000 - start_ms))
  log "$ref -> $out/kres-operator.oci.tar ($1 in $((ms / 1000)).$((ms % 1000 / 100)) s)"
}

if [ -f "$cached/build-info" ]; then
  publish "cached, key $key"
  exit 0
fi

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

q() { printf '%q' "$1"; }
log "building $ref (key $key, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
mmdebstrap --mode=root --variant=essential --quiet \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook="install -m 0755 $(q "$bin/kres-operator") $(q "$bin/kresctl") \"\$1/usr/bin/\"" \
  --customize-hook='chroot "$1" install -d -o knot-resolver -g knot-resolver -m 0750 /var/cache/knot-resolver' \
  --customize-hook="chroot \"\$1\" id -u knot-resolver > $(q "$work/uid")" \
  --customize-hook="chroot \"\$1\" id -g knot-resolver > $(q "$work/gid")" \
  --customize-hook="chroot \"\$1\" dpkg-query -W -f '\${Package}\t\${Version}\n' > $(q "$work/packages.txt")" \
  --customize-hook='rm -f "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old' \
  --customize-hook='printf "" > "$1/etc/hostname"; printf "" > "$1/etc/resolv.conf"' \
  "$suite" "$work/rootfs.tar" "$sources" > "$work/mmdebstrap.log" 2>&1 ||
  { cat "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
uid=$(cat "$work/uid")
gid=$(cat "$work/gid")
[ "$uid" != 0 ] && [ "$gid" != 0 ] || die "knot-resolver resolved to uid $uid gid $gid"
(cd "$work" && sha256sum rootfs.tar > rootfs.sha256)

layout="$work/oci:$version"
umoci init --layout "$work/oci"
umoci new --image "$layout"
umoci raw add-layer --image "$layout" --history.created "$created" \
  --history.created_by "image/build.sh: mmdebstrap $suite + $packages + $name" "$work/rootfs.tar"
umoci config --image "$layout" --created "$created" --history.created "$created" \
  --history.created_by "image/build.sh: user, entrypoint, labels" \
  --config.user "$uid:$gid" \
  --config.entrypoint /usr/bin/kres-operator \
  --config.workingdir /var/cache/knot-resolver \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.label org.opencontainers.image.title="$name" \
  --config.label org.opencontainers.image.description="kres-operator and Knot Resolver (kresd) from Debian $suite" \
  --config.label org.opencontainers.image.version="$version" \
  --config.label org.opencontainers.image.revision="$revision" \
  --config.label org.opencontainers.image.created="$created" \
  --config.label org.opencontainers.image.licenses=GPL-3.0-or-later
umoci gc --layout "$work/oci"
skopeo copy --quiet "oci:$layout" "oci-archive:$work/kres-operator.oci.tar:$name:$version"
skopeo copy --quiet "oci:$layout" "docker-archive:$work/kres-operator.docker.tar:$ref"

{
  echo "ref=$ref"
  echo "version=$version"
  echo "user=$uid:$gid"
  echo "revision=$revision"
  echo "source_date_epoch=$SOURCE_DATE_EPOCH"
  echo "key=$key"
} > "$work/build-info"
rm -rf "$work/oci" "$work/rootfs.tar" "$work/uid" "$work/gid" "$work/mmdebstrap.log"
mv "$work" "$cached"
trap - EXIT

# Keep the three most recently used entries.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d ! -name 'build.*' -printf '%T@ %p\n' | sort -rn | tail -n +4 |
  cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
publish "built"
