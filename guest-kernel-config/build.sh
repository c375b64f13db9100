#!/usr/bin/env bash
# Builds Hako's guest kernel: Debian's linux-source-6.1, tinyconfig + fragments/*.config,
# the compatibility patches in patches/, an uncompressed vmlinux (ELF with the PVH note).
#
# The result is cached outside the repo under a key hashed from the source package version,
# the compiler, this script, the fragments and the patches, so a second run returns in
# seconds. (hako-kconfig is not in the key: a cold build verifies its output anyway.)
#
#   build.sh                 build if needed; print the vmlinux path as the last stdout line
#   build.sh --cached-only   print the path if a cached build exists, else exit 3
#
# HAKO_CACHE_DIR (default /var/cache/hako) holds kernel/<key>/{vmlinux,System.map,config}.
set -euo pipefail

# The whole script is one function, so bash parses it completely before running it (editing
# the file during a long build cannot break the running build).
main() {

    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    repo="$(cd "$here/.." && pwd)"
    cache_root="${HAKO_CACHE_DIR:-/var/cache/hako}/kernel"
    package="linux-source-6.1"
    cached_only=0

    for arg in "$@"; do
        case "$arg" in
            --cached-only) cached_only=1 ;;
            -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
            *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
        esac
    done

    log() { echo "guest-kernel: $*" >&2; }
    die() { echo "guest-kernel: error: $*" >&2; exit 1; }

    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        [ "$cached_only" = 1 ] && { log "$package is not installed"; exit 3; }
        [ "$(id -u)" = 0 ] || die "$package is not installed and installing it needs root (apt-get install $package)"
        log "installing $package"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >&2 \
            || die "apt-get install $package failed"
    fi
    version="$(dpkg-query -W -f='${Version}' "$package")"
    tarball="/usr/src/${package}.tar.xz"
    [ -f "$tarball" ] || die "$tarball is missing although $package is installed"

    key="$( {
        echo "package $package $version"
        gcc --version | head -n1
        cd "$here" && find build.sh fragments patches -type f -not -name '*~' | LC_ALL=C sort | xargs sha256sum
    } | sha256sum | cut -c1-16)"
    out="$cache_root/$key"

    if [ -f "$out/vmlinux" ]; then
        log "cached build $key"
        echo "$out/vmlinux"
        exit 0
    fi
    [ "$cached_only" = 1 ] && { log "no cached build for key $key"; exit 3; }

    # One build per key at a time; a run that waited finds the other's result.
    mkdir -p "$cache_root"
    exec 9> "$cache_root/.lock-$key"
    flock 9
    if [ -f "$out/vmlinux" ]; then
        log "cached build $key (built while waiting)"
        echo "$out/vmlinux"
        exit 0
    fi

    log "building kernel $version (key $key); this takes a few minutes"
    for tool in make gcc flex bison bc patch; do
        command -v "$tool" >/dev/null || die "$tool is missing (apt-get install build-essential flex bison bc patch libelf-dev)"
    done

    cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p hako-kconfig >&2 \
        || die "building hako-kconfig failed"
    kconfig="$repo/target/release/hako-kconfig"

    mkdir -p "$cache_root"
    work="$cache_root/build-$key"
    rm -rf "$work"
    mkdir -p "$work"
    trap 'rm -rf "$work"' EXIT
    log "unpacking $tarball"
    tar -xf "$tarball" -C "$work" --strip-components=1

    for patch in "$here"/patches/*.patch; do
        log "applying $(basename "$patch")"
        patch -d "$work" -p1 --forward --fuzz=0 --quiet < "$patch" >&2 || die "patch $(basename "$patch") does not apply to $version"
    done

    fragments=("$here"/fragments/*.config)
    make -C "$work" -s tinyconfig >&2
    "$kconfig" merge --base "$work/.config" --out "$work/.config.merged" "${fragments[@]}"
    mv "$work/.config.merged" "$work/.config"
    make -C "$work" -s olddefconfig >&2
    "$kconfig" verify --config "$work/.config" "${fragments[@]}" || die "the final .config lacks requested options (see above)"

    log "compiling vmlinux with $(nproc) jobs"
    if ! make -C "$work" -s -j"$(nproc)" vmlinux > "$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        die "kernel build failed"
    fi

    staging="$cache_root/.staging-$key"
    rm -rf "$staging"
    mkdir -p "$staging"
    cp "$work/vmlinux" "$work/System.map" "$staging/"
    cp "$work/.config" "$staging/config"
    echo "$package $version" > "$staging/source"
    mv "$staging" "$out"   # $out does not exist: checked under the lock
    log "built $(du -h "$out/vmlinux" | cut -f1) vmlinux"
    echo "$out/vmlinux"
}

main "$@"
