#!/usr/bin/env bash
# The compose demo's secrets, made on the host before `compose up` (the image
# has no shell) by `make demo` and `make demo-test`, never committed:
# deploy/secrets/ (git-ignored) gets
#   ca.pem node.pem node-key.pem ca-key.pem   `sluice certs`: client TLS and mutual-TLS routes
#   gateway.nk billing.nk shipping.nk admin.nk `sluice nkey`: user seeds (+ .pub, the public keys)
#   route-password                             the brokers' route credentials
#   broker.yaml                                configs/compose/sluice.yaml with the users and the
#                                              route password filled in: the brokers' config
# Existing files are kept (a running demo keeps working); delete the directory
# to start over. Files the containers mount (user 65532) are 0644; the
# directory itself is the host user's alone (0700).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SLUICE_BIN:-./bin/sluice}
dir=deploy/secrets
mkdir -p "$dir"
chmod 0700 "$dir"
# A bind mount started without these files makes the engine create
# directories in their place (owned by root): say so instead of failing later.
for f in ca.pem node.pem node-key.pem gateway.nk billing.nk shipping.nk broker.yaml; do
  if [ -d "$dir/$f" ]; then
    echo "$dir/$f is a directory (compose was started before make demo made the secrets): remove $dir and run make demo again" >&2
    exit 1
  fi
done

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/node.pem" ] || [ ! -s "$dir/node-key.pem" ]; then
  "$bin" certs --force --out "$dir" >/dev/null
fi

# nkey NAME: the seed in NAME.nk, its public key in NAME.pub; prints the key.
nkey() {
  if [ ! -s "$dir/$1.nk" ] || [ ! -s "$dir/$1.pub" ]; then
    "$bin" nkey --force --out "$dir/$1.nk" >"$dir/$1.pub.tmp"
    mv "$dir/$1.pub.tmp" "$dir/$1.pub"
  fi
  cat "$dir/$1.pub"
}
gateway=$(nkey gateway)
billing=$(nkey billing)
shipping=$(nkey shipping)
admin=$(nkey admin)

if [ ! -s "$dir/route-password" ]; then
  (umask 077; od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$dir/route-password")
fi
password=$(cat "$dir/route-password")

# The brokers' config: the compose config with `users: []` and `password: ""`
# (broker.auth and broker.cluster) replaced.
tmp=$(mktemp "$dir/broker.yaml.XXXXXX")
awk -v gateway="$gateway" -v billing="$billing" -v shipping="$shipping" -v admin="$admin" -v password="$password" '
  /^    users: \[\]/ {
    print "    users:"
    print "      - {name: gateway, nkey: " gateway ", role: gateway}"
    print "      - {name: billing, nkey: " billing ", role: worker, families: [orders/billing]}"
    print "      - {name: shipping, nkey: " shipping ", role: worker, families: [orders/shipping]}"
    print "      - {name: admin, nkey: " admin ", role: admin}"
    users++; next
  }
  /^    password: ""/ { print "    password: " password; pw++; next }
  { print }
  END { if (users != 1 || pw != 1) { print "configs/compose/sluice.yaml: want one broker.auth `users: []` and one broker.cluster `password: \"\"` line" > "/dev/stderr"; exit 1 } }
' configs/compose/sluice.yaml >"$tmp"
mv "$tmp" "$dir/broker.yaml"

# What the containers mount must be readable by their user (65532).
chmod 0644 "$dir"/ca.pem "$dir"/node.pem "$dir"/node-key.pem "$dir"/*.nk "$dir"/*.pub "$dir/broker.yaml"
chmod 0600 "$dir/route-password"
[ ! -e "$dir/ca-key.pem" ] || chmod 0600 "$dir/ca-key.pem"
