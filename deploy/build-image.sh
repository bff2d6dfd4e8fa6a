#!/bin/sh
# Builds the vomesh container image from a vomesh binary that is already
# built, without pulling any base image: the image is `FROM scratch` and
# holds the binary, exactly the shared libraries `ldd` lists for it, the
# dynamic loader, and an /etc/passwd and /etc/group naming the unprivileged
# `vomesh` user (uid/gid 10001).
#
#   deploy/build-image.sh BINARY [TAG]
#
#   BINARY  a vomesh executable, e.g. target/release/vomesh
#   TAG     image tag [default: vomesh:latest]
#
# Environment:
#   VOMESH_STRIP=1  strip debug sections from the copy in the image (the
#                   binary given is left alone); smaller image, no line
#                   numbers in backtraces.
#
# The libraries come from the build host, so the image runs the binary with
# the same glibc it was linked against; rebuild the image when the host's
# libraries change (security updates), as you would rebuild on a new base
# image. Sites with a registry can use deploy/Dockerfile.multistage instead.
set -eu

usage() {
    echo "usage: $0 BINARY [TAG]" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
binary=$1
tag=${2:-vomesh:latest}
here=$(cd "$(dirname "$0")" && pwd)

[ -f "$binary" ] && [ -x "$binary" ] || {
    echo "$0: $binary is not an executable file" >&2
    exit 1
}
command -v ldd >/dev/null || {
    echo "$0: ldd not found (it lists the libraries to copy)" >&2
    exit 1
}

context=$(mktemp -d "${TMPDIR:-/tmp}/vomesh-image.XXXXXX")
trap 'rm -rf "$context"' EXIT INT TERM
root=$context/rootfs

install -d -m 0755 "$root/usr/local/bin" "$root/etc/vomesh"
cp "$binary" "$root/usr/local/bin/vomesh"
if [ "${VOMESH_STRIP:-0}" = 1 ]; then
    if command -v strip >/dev/null; then
        strip --strip-debug "$root/usr/local/bin/vomesh"
    else
        echo "$0: strip not found (binutils); the image keeps the debug sections" >&2
    fi
fi
chmod 0755 "$root/usr/local/bin/vomesh"

# Every library and the loader, at the path the binary will look for it.
# ldd prints `name => /path (0x…)` for libraries, `/path (0x…)` for the
# loader and `name (0x…)` for the kernel's vDSO, which has no file.
libraries=$(ldd "$binary") || {
    echo "$0: ldd $binary failed; is it a dynamically linked ELF for this machine?" >&2
    exit 1
}
if printf '%s\n' "$libraries" | grep -q 'not found'; then
    echo "$0: unresolved libraries:" >&2
    printf '%s\n' "$libraries" | grep 'not found' >&2
    exit 1
fi
printf '%s\n' "$libraries" | while read -r first second third _; do
    case $second in
    "=>") path=$third ;;
    *) path=$first ;;
    esac
    case $path in
    /*) ;;
    *) continue ;; # linux-vdso.so.1
    esac
    install -d -m 0755 "$root$(dirname "$path")"
    # -L: the loader and libraries are often symlinks; the image needs the
    # file under the name the binary asks for.
    cp -L "$path" "$root$path"
done

# The account the node runs as; no shell, no home beyond its data.
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
vomesh:x:10001:10001:vomesh broker:/var/lib/vomesh:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
vomesh:x:10001:
GROUP
# glibc's resolver: /etc/hosts first (Docker writes it), then DNS (service
# names in a compose network, site host names in [mesh] members).
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"

# The data directory, owned by the vomesh user in the image so that a fresh
# named volume mounted there (initialised from the image) is writable.
install -d -m 0750 "$context/data"

cp "$here/Dockerfile" "$context/Dockerfile"
version=$("$binary" --version 2>/dev/null | head -n 1 | awk '{print $2}') || version=unknown
docker build --tag "$tag" --build-arg "VERSION=${version:-unknown}" "$context"
