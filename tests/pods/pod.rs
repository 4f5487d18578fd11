//! One rendered pod as a process of its tier binary, and the kubelet's checks of it: probes, its
//! ports, the preStop hook, SIGTERM within the grace period.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Probe};

use super::READY_LIMIT;
use super::cluster::{Cluster, pod_name, pod_spec, target_port, template_labels, token};
use super::kubelet::{environment, expand, setup_script, volumes};
use crate::support::process::binary;

/// One rendered pod, running as a process of its tier binary in a mount namespace of its own.
pub struct Pod {
    pub name: String,
    /// The pod template's labels (what Services select).
    pub labels: BTreeMap<String, String>,
    pub container: Container,
    pub grace: Duration,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub started: Instant,
}

impl Pod {
    pub async fn start(cluster: &Cluster, d: &Deployment) -> Pod {
        let spec = pod_spec(d);
        let name = pod_name(d);
        assert!(
            spec.init_containers.as_ref().is_none_or(Vec::is_empty),
            "{name}: init containers: extend this test"
        );
        assert_eq!(spec.containers.len(), 1, "{name}: one container per pod (extend this test for more)");
        let container = spec.containers[0].clone();
        let command = container.command.clone().unwrap_or_default();
        let program = match command.first().map(String::as_str) {
            Some(b @ ("goim-comet" | "goim-logic" | "goim-job")) => binary(b),
            other => panic!("{name}: command[0] is {other:?}, not one of goim-comet, goim-logic, goim-job"),
        };
        for p in container.ports.iter().flatten() {
            let port = u16::try_from(p.container_port).unwrap();
            assert!(
                TcpListener::bind(("0.0.0.0", port)).is_ok(),
                "{name}: port {port} is taken on this machine (another test or a leftover process?)"
            );
        }
        let env = environment(cluster, spec, &container, &name);
        let argv: Vec<String> =
            command[1..].iter().chain(container.args.iter().flatten()).map(|a| expand(a, &env)).collect();

        let dir = cluster.dir.0.join(&name);
        let mut files = volumes(cluster, spec, &container, &name);
        if spec.automount_service_account_token.unwrap_or(true) {
            let account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
            let token = token(cluster, &account).await;
            files.push((
                "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                vec![
                    ("token".into(), token.into_bytes()),
                    ("ca.crt".into(), cluster.root_ca.clone().into_bytes()),
                    ("namespace".into(), cluster.ns.clone().into_bytes()),
                ],
            ));
        }
        let script = setup_script(cluster, &dir, &name, &files, &env, container.working_dir.as_deref());
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let log = dir.join("log");
        let out = std::fs::File::create(&log).unwrap();
        // `sh -c SCRIPT PROGRAM ARGS...`: the script ends in `exec env -i ... "$0" "$@"`, so the
        // arguments reach the binary exactly as rendered, and the process keeps the PID we signal.
        let child = Command::new("unshare")
            .args(["--mount", "--uts", "--propagation", "private", "sh", "-c", &script, program])
            .args(&argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: unshare: {e}"));
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).try_into().unwrap());
        Pod {
            name,
            labels: template_labels(d),
            container,
            grace,
            env,
            log,
            child: Some(child),
            started: Instant::now(),
        }
    }

    pub fn alive(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{} exited: {status}", self.name);
        }
    }

    /// A startup probe first (when rendered); liveness within the window before the kubelet
    /// restarts the container (probes from `initialDelaySeconds`, every `periodSeconds`, a
    /// restart at the `failureThreshold`-th consecutive failure); then readiness.
    pub async fn pass_probes(&mut self, cluster: &Cluster) {
        let mut since = self.started;
        if let Some(p) = self.container.startup_probe.clone() {
            self.poll("startup", &p, cluster, since + restart_window(&p)).await;
            since = Instant::now();
        }
        let live = self
            .container
            .liveness_probe
            .clone()
            .unwrap_or_else(|| panic!("{}: no livenessProbe", self.name));
        self.poll("liveness", &live, cluster, since + restart_window(&live)).await;
        let ready = self
            .container
            .readiness_probe
            .clone()
            .unwrap_or_else(|| panic!("{}: no readinessProbe", self.name));
        self.poll("readiness", &ready, cluster, Instant::now() + READY_LIMIT).await;
    }

    pub async fn poll(&mut self, what: &str, probe: &Probe, cluster: &Cluster, deadline: Instant) {
        loop {
            self.alive();
            let outcome = self.probe(probe, cluster).await;
            match outcome {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("{}: {what} probe: {e}", self.name),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub async fn probe(&self, p: &Probe, cluster: &Cluster) -> Result<(), String> {
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).try_into().unwrap());
        if let Some(get) = &p.http_get {
            let status = self.http_get(get, cluster, timeout).await?;
            return if status == 200 { Ok(()) } else { Err(format!("answered {status}, not 200")) };
        }
        if let Some(tcp) = &p.tcp_socket {
            let addr = SocketAddr::new(cluster.pod_ip, target_port(&self.container, &tcp.port));
            let connect = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await;
            return connect
                .map_err(|_| "timed out".to_owned())?
                .map(drop)
                .map_err(|e| format!("{addr}: {e}"));
        }
        if let Some(exec) = &p.exec {
            return self.exec(exec.command.as_deref().unwrap_or_default(), timeout).await;
        }
        panic!("{}: a probe kind this test does not know (grpc?): extend it", self.name)
    }

    pub async fn http_get(
        &self,
        get: &HTTPGetAction,
        cluster: &Cluster,
        timeout: Duration,
    ) -> Result<u16, String> {
        let scheme = get.scheme.as_deref().unwrap_or("HTTP");
        assert_eq!(scheme, "HTTP", "{}: {scheme} probes and hooks: extend this test", self.name);
        let host = get.host.clone().unwrap_or_else(|| cluster.pod_ip.to_string());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let port = target_port(&self.container, &get.port);
        let url = format!("http://{host}:{port}{}", get.path.as_deref().unwrap_or("/"));
        let mut req = reqwest::Client::new().get(&url).timeout(timeout);
        for h in get.http_headers.iter().flatten() {
            req = req.header(&h.name, &h.value);
        }
        req.send().await.map(|r| r.status().as_u16()).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Runs `command` inside the pod (its mount and UTS namespaces, its environment), as the
    /// kubelet runs exec probes and hooks; a tier binary's name runs that binary.
    pub async fn exec(&self, command: &[String], timeout: Duration) -> Result<(), String> {
        let (first, rest) =
            command.split_first().ok_or_else(|| format!("{}: an empty exec command", self.name))?;
        let program = match first.as_str() {
            b @ ("goim-comet" | "goim-logic" | "goim-job") => binary(b).to_owned(),
            other => other.to_owned(),
        };
        let pid = self.child.as_ref().expect("running").id().to_string();
        let mut child = Command::new("nsenter")
            .args(["--target", &pid, "--mount", "--uts", "--"])
            .arg(&program)
            .args(rest)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("nsenter {program}: {e}"))?;
        match exited(&mut child, timeout).await {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{command:?} exited {status}")),
            None => Err(format!("{command:?} did not finish within {timeout:?}")),
        }
    }

    /// Every declared container port accepts connections at the pod IP.
    pub async fn serves_its_ports(&mut self, cluster: &Cluster) {
        self.alive();
        for p in self.container.ports.iter().flatten() {
            let addr = SocketAddr::new(cluster.pod_ip, u16::try_from(p.container_port).unwrap());
            if let Err(e) = tokio::net::TcpStream::connect(addr).await {
                panic!("{}: container port {:?} ({addr}) refuses connections: {e}", self.name, p.name);
            }
        }
    }

    /// The preStop hook, when rendered: an httpGet must reach a route (not 404, and not 405: the
    /// kubelet sends GET), an exec command must exist and succeed; both within the grace period.
    pub async fn pre_stop(&mut self, cluster: &Cluster) {
        let Some(hook) = self.container.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
            return;
        };
        self.alive();
        let LifecycleHandler { exec, http_get, sleep, tcp_socket } = hook;
        if let Some(get) = http_get {
            let status = self
                .http_get(&get, cluster, self.grace)
                .await
                .unwrap_or_else(|e| panic!("{}: preStop: {e}", self.name));
            assert!(
                status != 404 && status != 405,
                "{}: preStop GET {:?} answered {status}",
                self.name,
                get.path
            );
        } else if let Some(exec) = exec {
            let command = exec.command.unwrap_or_default();
            self.exec(&command, self.grace).await.unwrap_or_else(|e| panic!("{}: preStop: {e}", self.name));
        } else if tcp_socket.is_some() || sleep.is_none() {
            panic!("{}: a preStop hook kind this test does not know: extend it", self.name);
        }
    }

    /// SIGTERM; the process must exit with success within the grace period.
    pub async fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let signal = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(signal.success(), "kill -TERM {}", self.name);
        match exited(&mut child, self.grace).await {
            Some(status) if status.success() => {}
            outcome => {
                self.show_log();
                panic!(
                    "{}: SIGTERM, then {outcome:?} within {:?} (None: still running)",
                    self.name, self.grace
                );
            }
        }
    }

    pub fn show_log(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        eprintln!("----- {} (stdout and stderr) -----\n{text}----- end of {} -----", self.name, self.name);
    }
}

/// Killed on drop (a failed check); its output is printed when the test is failing.
impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.show_log();
        }
    }
}

/// The kubelet's restart window of a liveness (or startup) probe.
pub fn restart_window(p: &Probe) -> Duration {
    let secs = |v: Option<i32>, default: i32| u64::try_from(v.unwrap_or(default)).unwrap();
    let (delay, period, failures, timeout) = (
        secs(p.initial_delay_seconds, 0),
        secs(p.period_seconds, 10),
        secs(p.failure_threshold, 3),
        secs(p.timeout_seconds, 1),
    );
    Duration::from_secs(delay + period * failures.saturating_sub(1) + timeout)
}

/// Waits up to `limit` for `child` to exit; kills it and answers `None` when it does not.
pub async fn exited(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
