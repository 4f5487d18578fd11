#!/usr/bin/env bash
# Throwaway Redis and Apache Kafka (one KRaft broker+controller node) on 127.0.0.1 for the
# backend tests, and the Python tools that act as a Kafka client we did not write.
# GOIM_SERVICES_HOST binds them to another local address instead (scripts/e2e-local.sh: the
# test node's bridge address, which its pods reach).
#
#   scripts/services.sh install                 install what is missing (nothing else)
#   scripts/services.sh start   [redis|kafka]   install if missing, start (both by default), wait
#                                               until they accept connections, write the env file
#   scripts/services.sh stop    [redis|kafka]   stop (both by default); data is thrown away
#   scripts/services.sh restart  redis|kafka    stop and start again on the same port (Kafka keeps
#                                               its log; Redis comes back empty)
#   scripts/services.sh status                  what runs where
#   scripts/services.sh env                     print the env file (`eval "$(scripts/services.sh env)"`)
#
# The env file ($GOIM_SERVICES_DIR/env, default /tmp/goim-services/env) exports:
#   GOIM_TEST_REDIS_URL      redis://127.0.0.1:PORT/0
#   GOIM_TEST_KAFKA_BROKERS  127.0.0.1:PORT
#   GOIM_TEST_REDIS_SERVER   the redis-server binary (tests that start and kill their own Redis)
#   GOIM_TEST_KAFKA_HOME     the Kafka install: lib/ (the classpath) and log4j2.properties (tests
#                            that start, kill and restart their own broker)
#   GOIM_TEST_JAVA           the java that runs it
#   GOIM_TEST_PYTHON         the venv's python, with confluent-kafka, protobuf and grpcio-tools
#   GOIM_TEST_SERVICES       this script (fault tests call `restart kafka` / `restart redis`)
#
# Installs go to persistent places: Debian's redis-server via apt-get; Apache Kafka
# org.apache.kafka:kafka_2.13:$KAFKA_VERSION and a log4j2 SLF4J binding resolved by `mvn` from
# Maven Central into /var/tmp/goim-tools/kafka-$KAFKA_VERSION/lib (local repository
# /var/tmp/goim-tools/m2); the venv at /var/tmp/goim-tools/venv. Each happens only when missing.
# The broker keeps its log on disk under $GOIM_SERVICES_DIR/kafka-data: `restart kafka` keeps
# topics, offsets and producer state. Nothing creates topics here: goim-logic creates its own at
# start (`[kafka] partitions`), tests create theirs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${GOIM_TOOLS_DIR:-/var/tmp/goim-tools}"
state="${GOIM_SERVICES_DIR:-/tmp/goim-services}"
KAFKA_VERSION=4.3.1     # org.apache.kafka:kafka_2.13, the broker (Scala 2.13 build)
LOG4J_VERSION=2.25.4    # the log4j-core Kafka itself depends on, plus its SLF4J 1.x binding
kafka_home="$tools/kafka-$KAFKA_VERSION"
java="${JAVA:-java}"
# The broker's JVM, up to the main class: 512 MiB of heap is plenty for tests.
kafka_jvm=("$java" -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$kafka_home/log4j2.properties" -cp "$kafka_home/lib/*")
venv="$tools/venv"
host="${GOIM_SERVICES_HOST:-127.0.0.1}"

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------- install

apt_updated=0
apt_install() {
    local sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    if [ "$apt_updated" -eq 0 ]; then
        "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 \
        install -y -qq "$@" >/dev/null
}

install_redis() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
    log "installing Debian redis-server"
    apt_install redis-server
    # Debian's package may start a system instance on 6379; ours never uses that port.
}

install_kafka() {
    if [ -s "$kafka_home/classpath.ok" ]; then return; fi
    command -v mvn >/dev/null || die "mvn is not installed (Maven resolves the Kafka broker)"
    command -v "$java" >/dev/null || die "java is not installed (Kafka needs Java 17+)"
    mkdir -p "$kafka_home"
    exec 9>"$tools/.kafka-install.lock"
    flock 9
    if [ ! -s "$kafka_home/classpath.ok" ]; then
        log "installing Apache Kafka $KAFKA_VERSION into $kafka_home (mvn, Maven Central)"
        cat >"$kafka_home/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.goim-rs.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
        rm -rf "${kafka_home:?}/lib"
        mvn -B -q -f "$kafka_home/pom.xml" -Dmaven.repo.local="$tools/m2" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$kafka_home/lib" \
            >"$kafka_home/install.log" 2>&1 || die "mvn could not resolve Kafka; see $kafka_home/install.log"
        cat >"$kafka_home/log4j2.properties" <<'EOF'
# The broker's log, to stdout: warnings and errors, plus the start-up line tests wait for.
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
EOF
        ls "$kafka_home/lib" >"$kafka_home/classpath.ok"
    fi
    flock -u 9
}

install_python() {
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import confluent_kafka, google.protobuf, grpc_tools' 2>/dev/null; then
        return
    fi
    log "creating the Python venv $venv (confluent-kafka, protobuf, grpcio-tools)"
    mkdir -p "$tools"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's python3 keeps venv (and ensurepip) in a package of its own.
        apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check confluent-kafka protobuf grpcio-tools
}

install_all() {
    install_redis
    install_python
    install_kafka
}

# ---------------------------------------------------------------------------------------- helpers

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("'"$host"'", 0)); print(s.getsockname()[1])'
}

# The port a service used before (so a restart keeps it), unless something else took it since;
# else a free one.
port_of() {
    local name=$1
    if [ -s "$state/$name.port" ] && ! accepts "$(cat "$state/$name.port")"; then
        cat "$state/$name.port"
    else
        free_port | tee "$state/$name.port"
    fi
}

running() {
    local pidfile="$state/$1.pid"
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

accepts() {
    (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

# Waits up to $2 seconds for $1's port to accept connections.
wait_port() {
    local name=$1 secs=$2 port
    port="$(cat "$state/$name.port")"
    for _ in $(seq 1 $((secs * 10))); do
        if accepts "$port"; then return 0; fi
        if ! running "$name"; then die "$name exited; see $state/$name.log"; fi
        sleep 0.1
    done
    die "$name did not accept connections on $host:$port within ${secs}s; see $state/$name.log"
}

stop_pid() {
    local name=$1 pid
    if ! running "$name"; then rm -f "$state/$name.pid"; return; fi
    pid="$(cat "$state/$name.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$state/$name.pid"
    log "$name stopped"
}

# ---------------------------------------------------------------------------------------- services

start_redis() {
    install_redis
    if running redis; then return; fi
    local port dir
    port="$(port_of redis)"
    dir="$state/redis-data"
    rm -rf "$dir" && mkdir -p "$dir"
    # No persistence: an RDB or AOF would let data survive a restart that tests expect to lose.
    # Protected mode refuses every address but loopback without a password; GOIM_SERVICES_HOST
    # is a local bridge address that only this machine's network namespaces reach.
    local protected=yes
    [ "$host" = 127.0.0.1 ] || protected=no
    redis-server --bind "$host" --port "$port" --dir "$dir" --save '' --appendonly no --protected-mode "$protected" \
        --daemonize yes --pidfile "$state/redis.pid" --logfile "$state/redis.log" >/dev/null
    for _ in $(seq 1 50); do
        if [ -s "$state/redis.pid" ]; then break; fi
        sleep 0.1
    done
    wait_port redis 10
    [ "$(redis-cli -h "$host" -p "$port" ping)" = PONG ] || die "redis on $host:$port does not answer PING"
    log "redis on $host:$port"
}

start_kafka() {
    install_kafka
    if running kafka; then return; fi
    local port controller dir
    port="$(port_of kafka)"
    controller="$(port_of kafka-controller)"
    dir="$state/kafka-data"
    cat >"$state/kafka.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$host:$controller
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$controller
advertised.listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$controller
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
    # Format once; a restart runs on the same log.
    if [ ! -s "$dir/meta.properties" ]; then
        mkdir -p "$dir"
        "${kafka_jvm[@]}" kafka.tools.StorageTool format --standalone \
            -t "$("${kafka_jvm[@]}" kafka.tools.StorageTool random-uuid)" -c "$state/kafka.properties" \
            >"$state/kafka-format.log" 2>&1 || die "formatting Kafka's log failed; see $state/kafka-format.log"
    fi
    # setsid: the broker outlives this script and the shell that ran it.
    setsid "${kafka_jvm[@]}" kafka.Kafka "$state/kafka.properties" >>"$state/kafka.log" 2>&1 </dev/null &
    echo $! >"$state/kafka.pid"
    wait_port kafka 60
    log "kafka $KAFKA_VERSION (KRaft, one node) on $host:$port, log in $dir"
}

write_env() {
    {
        if [ -s "$state/redis.port" ]; then
            echo "export GOIM_TEST_REDIS_URL=redis://$host:$(cat "$state/redis.port")/0"
        fi
        if [ -s "$state/kafka.port" ]; then
            echo "export GOIM_TEST_KAFKA_BROKERS=$host:$(cat "$state/kafka.port")"
        fi
        echo "export GOIM_TEST_REDIS_SERVER=$(command -v redis-server || echo redis-server)"
        echo "export GOIM_TEST_KAFKA_HOME=$kafka_home"
        echo "export GOIM_TEST_JAVA=$(command -v "$java" || echo java)"
        echo "export GOIM_TEST_PYTHON=$venv/bin/python"
        echo "export GOIM_TEST_SERVICES=$here/services.sh"
    } >"$state/env"
}

status() {
    local name
    for name in redis kafka; do
        if running "$name"; then
            echo "$name: running on $host:$(cat "$state/$name.port") (pid $(cat "$state/$name.pid"))"
        else
            echo "$name: stopped"
        fi
    done
}

main() {
    local cmd=${1:-} which=${2:-all}
    mkdir -p "$state"
    case "$which" in redis | kafka | all) ;; *) die "unknown service $which (redis, kafka)" ;; esac
    case "$cmd" in
    install) install_all ;;
    start)
        install_python
        if [ "$which" != kafka ]; then start_redis; fi
        if [ "$which" != redis ]; then start_kafka; fi
        write_env
        cat "$state/env"
        ;;
    stop)
        if [ "$which" != kafka ]; then stop_pid redis; fi
        if [ "$which" != redis ]; then
            stop_pid kafka
            rm -rf "$state/kafka-data"
        fi
        ;;
    restart)
        [ "$which" != all ] || die "restart needs a service: redis or kafka"
        stop_pid "$which"
        "start_$which"
        write_env
        ;;
    status) status ;;
    env)
        [ -s "$state/env" ] || die "no env file; run: $0 start"
        cat "$state/env"
        ;;
    *) die "usage: $0 install|start|stop|restart|status|env [redis|kafka]" ;;
    esac
}

main "$@"
