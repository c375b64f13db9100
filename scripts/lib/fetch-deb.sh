#!/usr/bin/env bash
# fetch-deb.sh SUITE PACKAGE VERSION: fetches one Debian package of SUITE (sid's containerd
# 2.x, bookworm's docker.io 20.10) for the tests that run Hako under it, without installing
# it (no service starts, nothing of the machine changes) and without touching the machine's
# apt sources: a private sources list and apt state under the cache, `apt-get download`,
# `dpkg-deb -x`. The extracted tree is kept under
# $HAKO_CACHE_DIR/debs/SUITE/PACKAGE/VERSION/ (a warm run only checks it is there). When
# SUITE no longer holds VERSION, its current version is taken. Prints the tree's directory.
# Exits non-zero, saying why, when it cannot be fetched (no network): the tests then skip,
# saying so.
set -euo pipefail
suite="$1" package="$2" version="$3"
cache="${HAKO_CACHE_DIR:-/var/cache/hako}/debs/$suite/$package"
dir="$cache/$version"
if [ -f "$dir/.complete" ]; then
    echo "$dir"
    exit 0
fi
apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/download"
echo "deb http://deb.debian.org/debian $suite main" > "$apt_dir/sources.list"
opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir"
      -o APT::Sandbox::User=root -q)
apt-get "${opts[@]}" update >/dev/null
if ! apt-cache "${opts[@]}" madison "$package" | awk -v v="$version" '$3 == v {found=1} END {exit !found}'; then
    version="$(apt-cache "${opts[@]}" policy "$package" | awk '/Candidate:/ {print $2}')"
    echo "fetch-deb: $suite no longer has $package $3; taking $version" >&2
    dir="$cache/$version"
fi
( cd "$apt_dir/download" && rm -f ./*.deb && apt-get "${opts[@]}" download "$package=$version" >/dev/null )
rm -rf "$dir"
mkdir -p "$dir"
dpkg-deb -x "$apt_dir"/download/*.deb "$dir"
touch "$dir/.complete"
# The package lists (~100 MB for sid) are not kept: a warm run never reads them.
rm -rf "$apt_dir"
echo "$dir"
