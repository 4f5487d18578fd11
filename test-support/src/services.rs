//! Backends of a test's own: a redis-server (plain or TLS-only) and an Apache Kafka node, from
//! what `scripts/services.sh` installed (`GOIM_TEST_REDIS_SERVER`, `GOIM_TEST_KAFKA_HOME`,
//! `GOIM_TEST_JAVA`). A test can kill and restart them without disturbing any other test.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, accepting, free_port, installed};

/// A redis-server of the test's own, without persistence: a restart comes back empty, as a
/// Redis that lost its data would.
pub struct Redis {
    port: u16,
    dir: PathBuf,
    tls: Option<TlsFiles>,
    proc: Option<Proc>,
}

/// The files of a TLS-only redis-server (`--port 0 --tls-port`), and whether it asks clients
/// for a certificate (`--tls-auth-clients`).
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub auth_clients: bool,
}

impl Redis {
    /// Starts it on a free port, `dir` its working directory, and waits until it listens.
    pub async fn start(dir: PathBuf) -> Redis {
        let mut r = Redis { port: free_port(), dir, tls: None, proc: None };
        r.run().await;
        r
    }

    /// Like [`Redis::start`], with only a TLS port; waits until that port accepts TCP
    /// connections (the handshake is the test's business).
    pub async fn start_tls(dir: PathBuf, tls: TlsFiles) -> Redis {
        let mut r = Redis { port: free_port(), dir, tls: Some(tls), proc: None };
        r.run().await;
        r
    }

    /// Starts it (again, after [`Redis::stop`]) on the same port and directory.
    pub async fn run(&mut self) {
        let mut cmd = Command::new(installed("GOIM_TEST_REDIS_SERVER"));
        cmd.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", if tls.auth_clients { "yes" } else { "no" }]);
            }
        }
        cmd.args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null());
        self.proc = Some(Proc::spawn("redis-server", cmd));
        let what = if self.tls.is_some() { " on its TLS port (is it built with TLS?)" } else { "" };
        assert!(
            accepting(self.port, Duration::from_secs(10)).await,
            "redis-server did not listen on {}{what} within 10s",
            self.port
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://` or, with TLS, `rediss://` 127.0.0.1 on its port, database 0.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// kill -9: its data is gone (no persistence).
    pub fn stop(&mut self) {
        assert!(self.proc.take().expect("running").kill9().code().is_none(), "redis was killed");
    }
}

/// An Apache Kafka node of the test's own (KRaft, broker and controller in one process), its
/// log in the test's scratch directory: a restart on the same directory keeps topics, offsets and
/// producer state, as a real broker does. logic creates the push topic at start.
pub struct Broker {
    port: u16,
    controller: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

/// Any base64url-encoded 16 bytes name a cluster; this is `goim-rs-broker11`.
const KAFKA_CLUSTER_ID: &str = "Z29pbS1ycy1icm9rZXIxMQ";

impl Broker {
    pub async fn start(dir: PathBuf) -> Broker {
        let mut b = Broker { port: free_port(), controller: free_port(), dir, proc: None };
        let props = b.properties();
        let format = b
            .java()
            .arg("kafka.tools.StorageTool")
            .arg("format")
            .arg("--standalone")
            .args(["-t", KAFKA_CLUSTER_ID, "-c"])
            .arg(&props)
            .output()
            .expect("run kafka's StorageTool");
        assert!(
            format.status.success(),
            "formatting the log failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        b.run().await;
        b
    }

    /// The JVM with Kafka's classpath (`GOIM_TEST_KAFKA_HOME`, from `scripts/services.sh env`).
    fn java(&self) -> Command {
        let home = PathBuf::from(installed("GOIM_TEST_KAFKA_HOME"));
        let mut cmd = Command::new(installed("GOIM_TEST_JAVA"));
        cmd.args(["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"])
            .arg(format!("-Dlog4j2.configurationFile={}", home.join("log4j2.properties").display()))
            .arg("-cp")
            .arg(home.join("lib/*"));
        cmd
    }

    fn properties(&self) -> PathBuf {
        let (port, controller) = (self.port, self.controller);
        let text = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\nnum.partitions=1\noffsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=4\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n",
            self.dir.join("log").display()
        );
        let path = self.dir.join("server.properties");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the broker on its log (formatted by [`Broker::start`]) and waits until it serves.
    pub async fn run(&mut self) {
        let mut cmd = self.java();
        cmd.arg("kafka.Kafka").arg(self.dir.join("server.properties"));
        if std::env::var_os("GOIM_TEST_LOG").is_none() {
            cmd.stdout(std::process::Stdio::null());
        }
        self.proc = Some(Proc::spawn("kafka", cmd));
        assert!(accepting(self.port, Duration::from_secs(60)).await, "kafka did not start");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// kill -9: nothing flushed, no controlled shutdown.
    pub fn kill9(&mut self) {
        assert!(self.proc.take().expect("running").kill9().code().is_none(), "kafka was killed");
    }

    /// SIGTERM: Kafka's own orderly shutdown.
    pub fn stop(&mut self) {
        let status = self.proc.take().expect("running").terminate();
        assert!(status.code().is_some() || status.signal().is_some(), "kafka stopped: {status}");
    }
}
