#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 for the operator and discovery tests: etcd,
# kube-apiserver (RBAC, ServiceAccount tokens), kube-controller-manager, kube-scheduler, and kwok
# for fake nodes, all built from their Go modules. Test infrastructure only: nothing here ships.
#
#   scripts/k8s.sh install   build what is missing into $GOIM_TOOLS_DIR/k8s/bin (nothing else)
#   scripts/k8s.sh start     install if missing, start everything, wait until /readyz is green
#                            and a node is Ready, write the admin kubeconfig
#   scripts/k8s.sh stop      end exactly the processes `start` started (by PID); data is dropped
#   scripts/k8s.sh env       print `export KUBECONFIG=...` and the tool paths
#   scripts/k8s.sh status    Kubernetes version, start time, processes
#
# Versions are pinned below, in one place. Builds use Go caches under $GOIM_TOOLS_DIR/go, so a
# second install is a no-op and a rebuild after a version bump is incremental.
set -euo pipefail

# ---------------------------------------------------------------------------------------- versions

KUBE_VERSION=v1.37.2 # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kube-proxy
ETCD_VERSION=v3.7.3  # the 3.7 line: Kubernetes 1.37's etcd client is 3.7.0
KWOK_VERSION=v0.8.0  # fake nodes; v0.8 has no built-in stages, ours are in kwok-stages.yaml
HELM_VERSION=v4.3.1  # the chart tests (helm v4: the current major; v3 gets only fixes now)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${GOIM_TOOLS_DIR:-/var/tmp/goim-tools}"
kdir="$tools/k8s"
bin="$kdir/bin"
state="${GOIM_K8S_DIR:-/tmp/goim-k8s}"
host=127.0.0.1

export GOMODCACHE="${GOMODCACHE_OVERRIDE:-$tools/go/mod}"
export GOCACHE="${GOCACHE_OVERRIDE:-$tools/go/cache}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

log() { echo "k8s: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------- install

stamp_ok() { [ -s "$bin/.$1.version" ] && [ "$(cat "$bin/.$1.version")" = "$2" ] && [ -x "$bin/$1" ]; }

# A wrapper module in $kdir/src/NAME, so a module that has replace directives of its own can be
# built: ours pins what its replaces pointed at.
wrapper() {
    local name=$1
    rm -rf "$kdir/src/$name"
    mkdir -p "$kdir/src/$name"
    cd "$kdir/src/$name"
    printf 'module goim-rs.local/%s\n\ngo 1.26.0\n' "$name" >go.mod
}

install_kube() {
    # kube-proxy: not for the control plane itself, for the e2e test node (docs/e2e.md).
    local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kube-proxy) c all=1
    for c in "${cmds[@]}"; do stamp_ok "$c" "$KUBE_VERSION" || all=0; done
    [ "$all" -eq 1 ] && return
    log "building Kubernetes $KUBE_VERSION (${cmds[*]}); cold: about 13 minutes on 2 cores"
    local t0 gomod minor patch m staging ldf
    t0=$(date +%s)
    wrapper kubernetes
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    [ -s "$gomod" ] || die "the Go module proxy has no k8s.io/kubernetes@$KUBE_VERSION"
    # Its own GODEBUG defaults, which a dependency's go.mod cannot pass on.
    grep '^godebug' "$gomod" >>go.mod || true
    minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
    patch="$(echo "$KUBE_VERSION" | cut -d. -f3)"
    staging="$(sed -n 's|^[[:space:]]*k8s.io/\([^ ]*\) => ./staging/.*|\1|p' "$gomod")"
    [ -n "$staging" ] || die "no staging replaces found in $gomod"
    for m in $staging; do
        go mod edit -replace="k8s.io/$m=k8s.io/$m@v0.$minor.$patch"
    done
    local pkgs=()
    for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    go get "${pkgs[@]/%/@$KUBE_VERSION}" >/dev/null 2>&1 || go get "${pkgs[@]/%/@$KUBE_VERSION}"
    ldf="-s -w"
    for m in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldf+=" -X '$m.gitVersion=$KUBE_VERSION' -X '$m.gitMajor=1' -X '$m.gitMinor=$minor'"
        ldf+=" -X '$m.gitTreeState=clean' -X '$m.buildDate=1970-01-01T00:00:00Z'"
    done
    mkdir -p "$bin"
    go build -trimpath -ldflags "$ldf" -o "$bin/" "${pkgs[@]}"
    for c in "${cmds[@]}"; do echo "$KUBE_VERSION" >"$bin/.$c.version"; done
    log "built Kubernetes $KUBE_VERSION in $(($(date +%s) - t0))s"
}

install_etcd() {
    stamp_ok etcd "$ETCD_VERSION" && return
    log "building etcd $ETCD_VERSION"
    wrapper etcd
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    mkdir -p "$bin"
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
    echo "$ETCD_VERSION" >"$bin/.etcd.version"
}

install_kwok() {
    stamp_ok kwok "$KWOK_VERSION" && return
    log "building kwok $KWOK_VERSION"
    mkdir -p "$bin"
    GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    echo "$KWOK_VERSION" >"$bin/.kwok.version"
}

install_helm() {
    stamp_ok helm "$HELM_VERSION" && return
    log "building helm $HELM_VERSION"
    mkdir -p "$bin"
    local major="${HELM_VERSION%%.*}"
    GOBIN="$bin" go install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
    echo "$HELM_VERSION" >"$bin/.helm.version"
}

install_all() {
    command -v go >/dev/null || die "go is not installed"
    command -v openssl >/dev/null || die "openssl is not installed"
    mkdir -p "$tools"
    # One install at a time, even when several scripts start at once.
    exec 8>"$tools/.k8s-install.lock"
    flock 8
    (install_etcd)
    (install_kwok)
    (install_helm)
    (install_kube)
    flock -u 8
}

# ---------------------------------------------------------------------------------------- start

SERVICE_CIDR=10.96.0.0/16 # allocation range only: nothing routes or sends traffic there
SERVICE_IP=10.96.0.1      # the first service IP, the `kubernetes` Service (in the serving cert)
POD_CIDR=10.244.0.0/16    # what kwok writes into pod status; routed to lo (pod_addresses_local)
NODE_IP=10.240.0.10       # what kwok writes into node status
NODES="${GOIM_K8S_NODES:-1}"
TAINT="${GOIM_K8S_TAINT:-true}" # taint kwok nodes (kwok.x-k8s.io/node=fake:NoSchedule)
STAGES="$here/kwok-stages.yaml"
KUBECONFIG_FILE="$state/admin.kubeconfig"
# Started in this order, stopped in the reverse one.
PROCS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# A port nothing listens on, below the ephemeral range, not handed out before by this run.
picked=" "
free_port() {
    local p _
    for _ in $(seq 500); do
        p=$((20000 + RANDOM % 12000))
        case "$picked" in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htln "sport = :$p")" ]; then
            picked+="$p "
            printf -v "$1" %s "$p"
            return
        fi
    done
    die "no free port found"
}

# Is the process in $state/NAME.pid alive and still the binary we started?
pid_of() {
    local f="$state/$1.pid" pid
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$bin/$1 " || return 1
    echo "$pid"
}

port_of() { sed -n "s/^$1 //p" "$state/ports" 2>/dev/null; }

all_alive() {
    local p
    for p in "${PROCS[@]}"; do pid_of "$p" >/dev/null || return 1; done
}

# Runs NAME from $bin in its own session, output to $state/NAME.log, PID to $state/NAME.pid.
# (A non-interactive shell's background child is no process-group leader, so setsid does not
# fork and $! is the process itself.)
launch() {
    local name=$1
    shift
    setsid "$bin/$name" "$@" </dev/null >>"$state/$name.log" 2>&1 &
    echo $! >"$state/$name.pid"
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s; gives up early when a process
# started so far has exited.
wait_until() {
    local limit=$1 what=$2 t0 p
    shift 2
    t0=$(date +%s)
    until "$@" >/dev/null 2>&1; do
        for p in "${PROCS[@]}"; do
            if [ -e "$state/$p.pid" ] && ! pid_of "$p" >/dev/null; then
                log "$p exited while waiting for $what (log: $state/$p.log)"
                return 1
            fi
        done
        if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

api() { curl -sf --max-time 5 --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" "https://$host:$(port_of kube-apiserver)$1"; }
kubectl() { "$bin/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"; }

etcd_healthy() { curl -sf --max-time 2 "http://$host:$(port_of etcd)/health" | grep -q '"health":"true"'; }
api_ready() {
    local out
    out="$(api '/readyz?verbose')" || return 1
    ! grep -q '^\[-\]' <<<"$out" && grep -q 'readyz check passed' <<<"$out"
}
component_healthy() { curl -sfk --max-time 2 "https://$host:$(port_of "$1")/healthz" | grep -qx ok; }
kwok_healthy() { curl -sf --max-time 2 "http://$host:$(port_of kwok)/healthz" | grep -qx ok; }
nodes_ready() {
    [ "$(kubectl get nodes -l type=kwok -o \
        jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
        grep -cx True)" -ge "$NODES" ]
}

# A CA, the API server's serving cert, the admin client cert (system:masters), the aggregation
# layer's front-proxy client cert and the ServiceAccount token signing key pair, with a config of our own (the system one is not read).
pki() {
    local d="$state/pki"
    mkdir -p "$d"
    cat >"$d/openssl.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = IP:$host, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:$SERVICE_IP
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CNF
    (
        cd "$d"
        export OPENSSL_CONF="$d/openssl.cnf"
        ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
        ec ca.key
        openssl req -x509 -new -key ca.key -subj /CN=goim-k8s-ca -days 3650 -extensions ca -out ca.crt
        local name subject ext
        while read -r name subject ext; do
            ec "$name.key"
            openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
            openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
                -extfile openssl.cnf -extensions "$ext" -out "$name.crt" 2>/dev/null
        done <<<"apiserver /CN=kube-apiserver server
admin /O=system:masters/CN=goim-admin client
front-proxy /CN=front-proxy-client client"
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
        openssl pkey -in sa.key -pubout -out sa.pub
        chmod 600 ./*.key
    )
}

write_kubeconfig() {
    local b64="base64 -w0"
    cat >"$KUBECONFIG_FILE" <<KC
apiVersion: v1
kind: Config
clusters:
- name: goim-k8s
  cluster:
    server: https://$host:$(port_of kube-apiserver)
    certificate-authority-data: $($b64 "$state/pki/ca.crt")
users:
- name: goim-admin
  user:
    client-certificate-data: $($b64 "$state/pki/admin.crt")
    client-key-data: $($b64 "$state/pki/admin.key")
contexts:
- name: goim-k8s
  context:
    cluster: goim-k8s
    user: goim-admin
    namespace: default
current-context: goim-k8s
KC
    chmod 600 "$KUBECONFIG_FILE"
}

# kwok manages the nodes annotated kwok.x-k8s.io/node=fake (and no other node).
create_nodes() {
    local i taints=""
    [ "$NODES" -gt 0 ] || return 0 # GOIM_K8S_NODES=0: pods go to a real node (scripts/e2e-local.sh)
    if [ "$TAINT" = true ]; then
        taints='  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule'
    fi
    for ((i = 0; i < NODES; i++)); do
        cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec:
$taints
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
NODE
    done | kubectl apply -f - >/dev/null
}

# Last lines of every log, for a start that failed.
show_logs() {
    local p
    for p in "${PROCS[@]}"; do
        [ -s "$state/$p.log" ] || continue
        log "--- $state/$p.log (last 15 lines)"
        tail -n 15 "$state/$p.log" >&2
    done
}

# Every binary start needs, at the pinned version (no Go toolchain needed then).
installed() {
    local c
    for c in etcd:$ETCD_VERSION kwok:$KWOK_VERSION kube-apiserver:$KUBE_VERSION \
        kube-controller-manager:$KUBE_VERSION kube-scheduler:$KUBE_VERSION kubectl:$KUBE_VERSION \
        kube-proxy:$KUBE_VERSION; do
        stamp_ok "${c%%:*}" "${c#*:}" || return 1
    done
}

cmd_start() {
    if all_alive && api_ready; then
        log "already running ($state); nothing to do"
        return
    fi
    if [ -e "$state" ]; then
        log "a previous control plane in $state is incomplete; stopping it first"
        cmd_stop all
    fi
    installed || install_all
    [ -s "$STAGES" ] || die "$STAGES is missing"
    local t0 p
    t0=$(now)
    mkdir -p "$state"
    : >"$state/.goim-k8s" # marks the directory as ours, for stop's rm -rf
    date -u +%Y-%m-%dT%H:%M:%SZ >"$state/started"
    local etcd_port peer_port api_port kcm_port sched_port kwok_port
    for p in etcd_port peer_port api_port kcm_port sched_port kwok_port; do free_port "$p"; done
    printf '%s %s\n' etcd "$etcd_port" kube-apiserver "$api_port" kube-controller-manager "$kcm_port" \
        kube-scheduler "$sched_port" kwok "$kwok_port" >"$state/ports"
    start_ok=0
    trap 'if [ "$start_ok" != 1 ]; then log "start failed"; show_logs; cmd_stop keep-logs; fi' EXIT

    pki
    write_kubeconfig

    launch etcd --name=goim --data-dir="$state/etcd" \
        --listen-client-urls="http://$host:$etcd_port" --advertise-client-urls="http://$host:$etcd_port" \
        --listen-peer-urls="http://$host:$peer_port" --initial-advertise-peer-urls="http://$host:$peer_port" \
        --initial-cluster="goim=http://$host:$peer_port" --initial-cluster-state=new \
        --unsafe-no-fsync --auto-compaction-retention=1 --quota-backend-bytes=$((2 << 30)) --log-level=warn
    wait_until 20 "etcd" etcd_healthy

    local k="$state/pki"
    launch kube-apiserver \
        --etcd-servers="http://$host:$etcd_port" --etcd-prefix=/registry \
        --bind-address="$host" --advertise-address="$host" --secure-port="$api_port" \
        --tls-cert-file="$k/apiserver.crt" --tls-private-key-file="$k/apiserver.key" \
        --client-ca-file="$k/ca.crt" \
        --authorization-mode=Node,RBAC --allow-privileged=true \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$k/sa.pub" --service-account-signing-key-file="$k/sa.key" \
        --requestheader-client-ca-file="$k/ca.crt" --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$k/front-proxy.crt" --proxy-client-key-file="$k/front-proxy.key" \
        --endpoint-reconciler-type=none --profiling=false
    wait_until 60 "kube-apiserver /readyz" api_ready

    local kc="$KUBECONFIG_FILE"
    launch kube-controller-manager \
        --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
        --bind-address="$host" --secure-port="$kcm_port" \
        --controllers='*' --leader-elect=false --use-service-account-credentials=true \
        --root-ca-file="$k/ca.crt" --service-account-private-key-file="$k/sa.key" \
        --cluster-signing-cert-file="$k/ca.crt" --cluster-signing-key-file="$k/ca.key" \
        --kube-api-qps=100 --kube-api-burst=200 --profiling=false
    launch kube-scheduler \
        --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
        --bind-address="$host" --secure-port="$sched_port" --leader-elect=false --profiling=false
    launch kwok --kubeconfig="$kc" --config="$STAGES" \
        --manage-all-nodes=false --manage-single-node= \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --manage-nodes-with-label-selector= \
        --cidr="$POD_CIDR" --node-ip="$NODE_IP" --node-lease-duration-seconds=40 \
        --server-address="$host:$kwok_port"
    create_nodes
    pod_addresses_local

    wait_until 30 "kube-controller-manager /healthz" component_healthy kube-controller-manager
    wait_until 30 "kube-scheduler /healthz" component_healthy kube-scheduler
    wait_until 30 "kwok /healthz" kwok_healthy
    wait_until 30 "$NODES Ready node(s)" nodes_ready
    # The serviceaccount controller has run: namespaces get their `default` ServiceAccount.
    wait_until 30 "the default ServiceAccount" kubectl get serviceaccount default -n default
    wait_until 30 "kube-apiserver /readyz" api_ready
    start_ok=1
    trap - EXIT
    local took
    took="$(elapsed "$t0")"
    echo "$took" >"$state/start-seconds"
    log "control plane up in ${took}s: Kubernetes $KUBE_VERSION at https://$host:$api_port, $NODES kwok node(s), state in $state"
}

# ---------------------------------------------------------------------------------------- stop

# Ends the processes `start` started, by their PID files, in three steps: the clients of the
# API server, then the API server, then etcd (TERMed together, each waits for the one below
# it). Each step: TERM, then KILL what is still running after 10 s.
# `all` also removes the state; `keep-logs` (a failed start) leaves it, for a look at the logs.
# kwok's pod IPs are local addresses of this machine: a `local` route of the pod CIDR on lo
# (Linux AnyIP) lets a test bind a real process at a fake pod's IP (a comet's admin port the
# operator reads, say), and traffic to those IPs never leaves loopback. Needs root (or sudo);
# left in place by `stop` (harmless, and another control plane may be using it).
pod_addresses_local() {
    if ip route show table local | grep -q "^local $POD_CIDR dev lo"; then return; fi
    local sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo -n)
    "${sudo_cmd[@]}" ip route replace local "$POD_CIDR" dev lo table local \
        || die "cannot route the pod CIDR $POD_CIDR to lo (needs root or passwordless sudo)"
    log "pod IPs ($POD_CIDR) are local addresses (route on lo)"
}

cmd_stop() {
    local mode=$1 stopped=0
    stop_step kwok kube-scheduler kube-controller-manager
    stop_step kube-apiserver
    stop_step etcd
    if [ "$stopped" -gt 0 ]; then log "stopped $stopped process(es)"; fi
    if [ "$mode" = keep-logs ]; then
        rm -f "$state"/*.pid
        return 0
    fi
    if [ -e "$state" ]; then
        [ -e "$state/.goim-k8s" ] || die "$state is not a goim-k8s state directory; not removing it"
        rm -rf "$state"
    fi
    return 0
}

# A process is gone when /proc has no entry, or only a zombie (one of ours after a failed start).
gone() { [ ! -d "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

stop_step() {
    local name pid pids=() deadline
    for name in "$@"; do
        pid="$(pid_of "$name")" || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    deadline=$(($(date +%s) + 10))
    for pid in "${pids[@]}"; do
        while ! gone "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
        if ! gone "$pid"; then
            log "pid $pid did not stop on TERM within 10s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$(($(date +%s) + 5))
            while ! gone "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
        fi
    done
    stopped=$((stopped + ${#pids[@]}))
}

# ---------------------------------------------------------------------------------------- env, status

cmd_env() {
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
    echo "export GOIM_K8S_BIN=$bin"
}

cmd_status() {
    if [ ! -e "$state/ports" ]; then
        echo "not running (no state in $state)"
        return 1
    fi
    local version name pid alive rc=0
    version="$(api /version | jq -r .gitVersion 2>/dev/null)" || version="unreachable"
    echo "kubernetes: ${version:-unreachable}"
    echo "started:    $(cat "$state/started" 2>/dev/null) (start took $(cat "$state/start-seconds" 2>/dev/null || echo '?')s)"
    echo "kubeconfig: $KUBECONFIG_FILE"
    printf '%-24s %8s %6s %s\n' NAME PID PORT ALIVE
    for name in "${PROCS[@]}"; do
        if pid="$(pid_of "$name")"; then alive=yes; else alive=no rc=1; fi
        printf '%-24s %8s %6s %s\n' "$name" "${pid:-$(cat "$state/$name.pid" 2>/dev/null || echo -)}" \
            "$(port_of "$name")" "$alive"
    done
    return "$rc"
}

main() {
    case "${1:-}" in
        install) install_all ;;
        start) cmd_start ;;
        stop) cmd_stop all ;;
        env) cmd_env ;;
        status) cmd_status ;;
        *)
            echo "usage: $0 install|start|stop|env|status" >&2
            exit 64
            ;;
    esac
}

main "$@"
