#!/usr/bin/env bash
# Certificates for a broker that authenticates latentcam clients
# (scripts/mosquitto-mtls.conf, README "Security"), made with the openssl CLI:
# EC P-256 keys, a private CA, one certificate per client.
#
#   mqtt-certs.sh DIR ca                  DIR/ca.pem, DIR/ca.key (keep ca.key offline)
#   mqtt-certs.sh DIR broker NAME|IP      DIR/broker.pem, broker.key (the broker's address)
#   mqtt-certs.sh DIR worker NAME         DIR/worker-NAME.pem, .key (CN _latentcam-host-NAME)
#   mqtt-certs.sh DIR device ID           DIR/device-ID.pem, device-ID.key (CN = the device id)
#
# Each device gets its own certificate and key: copy them to the device with
# ca.pem and name them in [mqtt] ca_file, cert_file and key_file. Revoking a
# device means removing it from the broker's trust (a CRL, `crlfile`, or a
# new CA); the ACL already limits what a stolen certificate can do to that
# device's own topics.
set -euo pipefail

usage() {
    sed -n '5,8p' "$0" | sed 's/^#   /usage: /' >&2
    exit 2
}
[ $# -ge 2 ] || usage
dir=$1
what=$2
days=${LATENTCAM_CERT_DAYS:-825}
mkdir -p "$dir"
cd "$dir"

key() { # FILE: a new P-256 private key, readable by its owner only
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
}

sign() { # NAME CN EXTENSIONS: NAME.key, NAME.pem signed by the CA
    [ -f ca.pem ] && [ -f ca.key ] || { echo "mqtt-certs: no CA in $dir: run '$0 $dir ca' first" >&2; exit 1; }
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days "$days" -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
    echo "mqtt-certs: $dir/$1.pem and $dir/$1.key (CN $2)"
}

case "$what" in
ca)
    [ ! -e ca.key ] || { echo "mqtt-certs: $dir/ca.key exists; not replacing it" >&2; exit 1; }
    key ca.key
    openssl req -x509 -new -key ca.key -subj "/CN=latentcam MQTT CA" -days $((days * 4)) \
        -sha256 -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
    echo "mqtt-certs: $dir/ca.pem and $dir/ca.key"
    ;;
broker)
    [ $# -eq 3 ] || usage
    name=$3
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then san="IP:$name"; else san="DNS:$name"; fi
    sign broker "$name" "subjectAltName=$san
extendedKeyUsage=serverAuth"
    ;;
worker)
    [ $# -eq 3 ] || usage
    name=$3
    if ! [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,47}$ ]]; then
        echo "mqtt-certs: worker name '$name' must be 1-48 of A-Z a-z 0-9 . _ : @ -" >&2
        exit 1
    fi
    sign "worker-$name" "_latentcam-host-$name" "extendedKeyUsage=clientAuth"
    echo "mqtt-certs: add to the broker's ACL file (scripts/mosquitto-latentcam.acl):"
    printf 'user _latentcam-host-%s\ntopic readwrite latentcam/#\n' "$name"
    ;;
device)
    [ $# -eq 3 ] || usage
    id=$3
    # A device id is a topic level and the ACL's user name: no '/', '+', '#',
    # not starting with '_' or '$' (wire/SPEC.md section 9); this script takes
    # the plain subset that is also safe in a certificate subject.
    if ! [[ "$id" =~ ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$ ]]; then
        echo "mqtt-certs: device id '$id' must be 1-64 of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit" >&2
        exit 1
    fi
    sign "device-$id" "$id" "extendedKeyUsage=clientAuth"
    ;;
*) usage ;;
esac
