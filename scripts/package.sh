#!/usr/bin/env bash
# package.sh - build the Debian packages resilience-common, resilience-agent
# and resilience-aggregator (CPack, from the install rules at the end of
# CMakeLists.txt; README.md "Install on a server").
#
#   scripts/package.sh [-B BUILD_DIR] [OUT_DIR]
#
# BUILD_DIR (default ./build-deb, or $RSL_PACKAGE_BUILD_DIR) is configured
# RelWithDebInfo without tests, with Debian's hardening flags from
# dpkg-buildflags (fortify, stack protector, relro, bindnow); CPack strips
# the binaries. The three .deb files are copied to OUT_DIR (default
# BUILD_DIR/debs) and their names printed, one a line, on stdout: the
# progress goes to stderr. Missing build packages (plus dpkg-dev, which
# CPack needs for dpkg-shlibdeps) are installed first, as in test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RSL_PACKAGE_BUILD_DIR:-$ROOT/build-deb}"
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        -B) [ $# -ge 2 ] || { echo "package.sh: -B needs a folder" >&2; exit 2; }
            BUILD="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "package.sh: unknown option $1" >&2; exit 2 ;;
        *) [ -z "$OUT" ] || { echo "package.sh: one OUT_DIR only" >&2; exit 2; }
           OUT="$1"; shift ;;
    esac
done
OUT="${OUT:-$BUILD/debs}"
JOBS="${RSL_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }

if [ "${RSL_SKIP_DEPS:-0}" != 1 ]; then
    # shellcheck source=scripts/install-deps.sh
    . "$ROOT/scripts/install-deps.sh"
    RSL_DEPS+=(dpkg-dev)
    rsl_install_deps >&2 || die "could not install the build dependencies"
fi

# The package version is the project's plus the Debian revision; the top
# entry of packaging/debian/changelog (shipped as changelog.Debian.gz) must
# name exactly that version, or the packages would contradict themselves.
project_version=$(sed -n 's/^project(resilience VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
deb_release=$(sed -n 's/^set(RSL_DEB_RELEASE \([0-9]*\))/\1/p' "$ROOT/CMakeLists.txt")
changelog_version=$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Version)
if [ "$changelog_version" != "$project_version-$deb_release" ]; then
    die "packaging/debian/changelog is for $changelog_version but the packages are" \
        "$project_version-$deb_release: add a changelog entry"
fi
# Reproducible archives: file times from the changelog, not the clock.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Timestamp)
export SOURCE_DATE_EPOCH

# Debian's flags: -D_FORTIFY_SOURCE=2, -fstack-protector-strong, -z relro,
# -z now. Passed explicitly, so they apply to an existing build folder too.
export DEB_BUILD_MAINT_OPTIONS="hardening=+all"
cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
ldflags="$(dpkg-buildflags --get LDFLAGS)"

say "configuring $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRESILIENCE_TESTS=OFF \
    -DRESILIENCE_SANITIZE=OFF -DCMAKE_INSTALL_PREFIX=/usr \
    -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" >&2
say "building"
cmake --build "$BUILD" -j "$JOBS" >&2
# CPack's strip keeps the .comment section (the compiler's version string,
# from the C runtime's objects too); dh_strip removes it, and so do we.
for prog in resilience-agent resilience-aggregator resilience-ctl; do
    objcopy --remove-section=.comment "$BUILD/$prog"
done
say "packaging"
rm -rf "$BUILD/cpack"
# umask: the archives get the modes of the staged files (0755 folders and
# programs, 0644 data), whatever the caller's umask.
(umask 022 && cd "$BUILD" && cpack -G DEB -B "$BUILD/cpack" >&2)

mkdir -p "$OUT"
shopt -s nullglob
debs=("$BUILD"/cpack/*.deb)
[ ${#debs[@]} -eq 3 ] || die "expected 3 packages in $BUILD/cpack, found ${#debs[@]}"
for deb in "${debs[@]}"; do
    cp "$deb" "$OUT/"
    say "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version): $OUT/$(basename "$deb")"
    (cd "$OUT" && realpath "$(basename "$deb")")
done
