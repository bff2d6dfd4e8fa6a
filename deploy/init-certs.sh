#!/bin/sh
# Creates the certificates of the three-site example mesh (deploy/compose.yml)
# with `vomesh certs init`, then gives each site only what it needs, owned by
# the container's vomesh user (uid/gid 10001):
#
#   certs/ca/            everything certs init wrote, including ca.key and the
#                        spare node ids 4 and 5 for sites added later. Keep it
#                        off the nodes (offline, in a vault).
#   certs/ca.crt         a copy of the CA certificate for clients to trust.
#   certs/site-N/        ca.crt, node-N.crt/.key, xmpp.crt/.key: mounted
#                        read-only at /etc/vomesh/certs in container site-N.
#
#   deploy/init-certs.sh [VOMESH]
#
#   VOMESH  the vomesh binary to run [default: `vomesh` on PATH, else the
#           image $VOMESH_IMAGE (default vomesh:latest) through docker run]
#
#   VOMESH_CERTS  where to write [default: deploy/certs]; compose.yml reads
#                 the same variable.
#
# Run it as root (or with sudo): handing the keys to uid 10001 needs chown.
# It refuses to overwrite existing certificates: a new CA would cut the
# running sites off from each other.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${VOMESH_CERTS:-$here/certs}
domain=alerts.example.org
sites="1 2 3"
spare_ids=4,5
image=${VOMESH_IMAGE:-vomesh:latest}

if [ -e "$out" ]; then
    echo "$0: $out exists; remove it first if you really want a new CA" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "$0: run as root (sudo $0): the keys must be owned by uid 10001" >&2
    exit 1
fi

install -d -m 0700 "$out" "$out/ca"
vomesh=${1:-$(command -v vomesh || true)}
if [ -n "$vomesh" ]; then
    "$vomesh" certs init --out "$out/ca" --nodes "1,2,3,$spare_ids" --domain "$domain"
else
    docker run --rm --user 0:0 --volume "$out/ca:/out" "$image" \
        certs init --out /out --nodes "1,2,3,$spare_ids" --domain "$domain"
fi

for n in $sites; do
    site=$out/site-$n
    install -d -m 0750 -o 10001 -g 10001 "$site"
    install -m 0644 -o 10001 -g 10001 "$out/ca/ca.crt" "$out/ca/xmpp.crt" "$out/ca/node-$n.crt" "$site/"
    install -m 0600 -o 10001 -g 10001 "$out/ca/xmpp.key" "$out/ca/node-$n.key" "$site/"
done
install -m 0644 "$out/ca/ca.crt" "$out/ca.crt"
chmod 0755 "$out"
echo "certificates for sites $sites in $out/site-N; CA and spare ids ($spare_ids) in $out/ca; clients trust $out/ca.crt"
