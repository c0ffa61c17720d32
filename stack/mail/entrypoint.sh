#!/usr/bin/env bash
# Entry point of the mail container: Dovecot and postfix of the local test
# stack, from the templates that scripts/stack renders, with the same test
# CA approach. The IMAP and SMTP listeners take every address of the
# container, and the server certificate also names SERVER_NAME, the host
# name that other containers connect to. The CA certificate is written to
# $STATE/tls/ca.crt, which docker-compose.yml shares with mailbridge.
# Logs go to files in $STATE/log, as in the local stack.
set -euo pipefail

STATE=/var/lib/mail-stack
TEMPLATES=/usr/local/share/mail-stack

log() { printf 'mail: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for name in MAIL_DOMAIN SERVER_NAME OAUTH_ISSUER IMAP_PORT IMAPS_PORT SMTP_PORT SMTPS_PORT LMTP_PORT AUTH_PORT; do
  [[ -n ${!name:-} ]] || die "missing environment variable $name; set it as docker-compose.yml does"
done

render() {
  local template=$1 target=$2
  sed -e "s|@STATE@|$STATE|g" \
    -e "s|@MAIL_DOMAIN@|$MAIL_DOMAIN|g" \
    -e "s|@LISTEN_ADDRESS@|0.0.0.0|g" \
    -e "s|@IMAP_PORT@|$IMAP_PORT|g" \
    -e "s|@IMAPS_PORT@|$IMAPS_PORT|g" \
    -e "s|@SMTP_PORT@|$SMTP_PORT|g" \
    -e "s|@SMTPS_PORT@|$SMTPS_PORT|g" \
    -e "s|@LMTP_PORT@|$LMTP_PORT|g" \
    -e "s|@AUTH_PORT@|$AUTH_PORT|g" \
    -e "s|@OAUTH_ISSUER@|$OAUTH_ISSUER|g" \
    "$template" >"$target"
}

# A test CA and one server certificate that both Dovecot and postfix
# present. A certificate kept on the volume from an earlier start is used
# again, so removing the volume makes new ones.
make_certificates() {
  local dir="$STATE/tls"
  [[ -s $dir/ca.crt && -s $dir/server.crt && -s $dir/server.key ]] && return 0
  log "creating the test CA and server certificate"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -subj "/O=mailbridge test stack/CN=mailbridge test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/O=mailbridge test stack/CN=$SERVER_NAME" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:$SERVER_NAME,DNS:localhost,IP:127.0.0.1" \
    "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  chmod 600 "$dir"/*.key
  chmod 644 "$dir/ca.crt" "$dir/server.crt"
}

mkdir -p "$STATE"/{log,run,tls,dovecot/lib,mail,postfix/etc,postfix/queue,postfix/data}
chmod 755 "$STATE" "$STATE/tls"
chown vmail:vmail "$STATE/mail"
chown postfix:postfix "$STATE/postfix/data"
make_certificates
render "$TEMPLATES/dovecot/dovecot.conf.in" "$STATE/dovecot/dovecot.conf"
render "$TEMPLATES/dovecot/oauth2.conf.ext.in" "$STATE/dovecot/oauth2.conf.ext"
render "$TEMPLATES/postfix/main.cf.in" "$STATE/postfix/etc/main.cf"
render "$TEMPLATES/postfix/master.cf.in" "$STATE/postfix/etc/master.cf"
# Each signed-in user may send only as its own address.
printf '%s\n' '/^(.+)$/ ${1}' >"$STATE/postfix/etc/sender_login"
printf '%s\n' '/-hold@/ HOLD' >"$STATE/postfix/etc/hold_recipients"

# Both servers fail to start while run or pid files of a stopped container
# remain.
rm -rf "$STATE/dovecot/run" "$STATE/postfix/queue/pid"

# postfix writes its errors only to a terminal, so `script` provides one.
script -qec "postfix -c '$STATE/postfix/etc' check && postfix -c '$STATE/postfix/etc' start" /dev/null ||
  die "postfix failed to start; its log is $STATE/log/postfix.log"
log "postfix submission on port $SMTP_PORT (STARTTLS) and $SMTPS_PORT (TLS)"
log "Dovecot IMAP on port $IMAP_PORT (STARTTLS) and $IMAPS_PORT (TLS); its log is $STATE/log/dovecot.log"
exec dovecot -F -c "$STATE/dovecot/dovecot.conf"
