#!/bin/sh
# podcidr's installer, run by the DaemonSet in conf/install.yaml on every node (as Calico's
# install-cni is):
#   1. copies the podcidr binary into the host's CNI bin directory;
#   2. writes the plugin's kubeconfig from the pod's ServiceAccount (token, CA, API address);
#   3. installs the conflist, with __NODE_NAME__ replaced by the node's name;
#   4. keeps running, and rewrites the kubeconfig whenever the kubelet rotates the token.
# With --once it stops after step 3 (for an init container, or a test).
# Every file is written aside and renamed into place, so the runtime never reads half a file.
set -eu

SA_DIR=${SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}
PODCIDR_BIN=${PODCIDR_BIN:-/podcidr}
HOST_BIN_DIR=${HOST_BIN_DIR:-/host/opt/cni/bin}
HOST_CONF_DIR=${HOST_CONF_DIR:-/host/etc/cni/net.d}
# The path on the host is what the conflist's `kubeconfig` names (its default).
KUBECONFIG_NAME=${KUBECONFIG_NAME:-podcidr-kubeconfig}
# A conflist to install (e.g. from a ConfigMap); empty: install none.
CONFLIST_SRC=${CONFLIST_SRC:-}
CONFLIST_NAME=${CONFLIST_NAME:-10-podcidr.conflist}
NODE_NAME=${NODE_NAME:-}
CHECK_SECONDS=${CHECK_SECONDS:-60}

log() { echo "podcidr-install: $*" >&2; }

# The API server as seen from the host. The in-cluster service address works wherever
# kube-proxy runs on the host; set KUBERNETES_API (https://host:port) to point elsewhere.
api_server() {
    if [ -n "${KUBERNETES_API:-}" ]; then
        echo "$KUBERNETES_API"
        return
    fi
    host=${KUBERNETES_SERVICE_HOST:?KUBERNETES_SERVICE_HOST is not set; set KUBERNETES_API}
    case $host in *:*) host="[$host]" ;; esac
    echo "https://$host:${KUBERNETES_SERVICE_PORT:-443}"
}

# put SRC DEST MODE: copy SRC to DEST through a temporary file in DEST's directory.
put() {
    tmp="$2.tmp.$$"
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
}

write_kubeconfig() {
    server=$(api_server)
    token=$(cat "$SA_DIR/token")
    ca=$(base64 < "$SA_DIR/ca.crt" | tr -d '\n')
    tmp="$HOST_CONF_DIR/.$KUBECONFIG_NAME.tmp.$$"
    (
        umask 077
        cat > "$tmp" <<KUBECONFIG
# Written by podcidr's installer (conf/install.sh) from the ServiceAccount of its pod;
# rewritten when the token changes. Do not edit.
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: podcidr
  user:
    token: $token
contexts:
- name: podcidr
  context:
    cluster: cluster
    user: podcidr
current-context: podcidr
KUBECONFIG
    )
    mv -f "$tmp" "$HOST_CONF_DIR/$KUBECONFIG_NAME"
    log "wrote $HOST_CONF_DIR/$KUBECONFIG_NAME for $server"
}

mkdir -p "$HOST_BIN_DIR" "$HOST_CONF_DIR"
put "$PODCIDR_BIN" "$HOST_BIN_DIR/podcidr" 0755
log "installed $HOST_BIN_DIR/podcidr ($("$HOST_BIN_DIR/podcidr" version | head -n 1))"

if [ -r "$SA_DIR/token" ]; then
    write_kubeconfig
else
    log "no ServiceAccount token in $SA_DIR: no kubeconfig written (fine for mode static or kubelet)"
fi

if [ -n "$CONFLIST_SRC" ]; then
    tmp="$HOST_CONF_DIR/.$CONFLIST_NAME.tmp.$$"
    sed "s/__NODE_NAME__/$NODE_NAME/g" "$CONFLIST_SRC" > "$tmp"
    mv -f "$tmp" "$HOST_CONF_DIR/$CONFLIST_NAME"
    log "installed $HOST_CONF_DIR/$CONFLIST_NAME${NODE_NAME:+ for node $NODE_NAME}"
fi

[ "${1:-}" = "--once" ] && exit 0

# The kubelet rotates a projected ServiceAccount token well before it expires.
last=$(cat "$SA_DIR/token" 2>/dev/null || true)
while sleep "$CHECK_SECONDS"; do
    now=$(cat "$SA_DIR/token" 2>/dev/null || true)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
        write_kubeconfig
        last=$now
    fi
done
