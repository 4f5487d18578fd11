//! Probes and lifecycle hooks. httpGet and tcpSocket connect from the host to the pod's address
//! (as a kubelet does, through the bridge); exec runs inside the container's namespaces.

use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process;

/// The running container a probe or hook acts on.
#[derive(Clone, Debug)]
pub struct Target {
    pub ip: Ipv4Addr,
    pub pid: u32,
    pub ports: Vec<ContainerPort>,
    pub image_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl Target {
    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        let n = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => match self.ports.iter().find(|p| p.name.as_deref() == Some(name)) {
                Some(p) => p.container_port,
                None => name.parse().map_err(|_| format!("no container port named {name}"))?,
            },
        };
        u16::try_from(n).map_err(|_| format!("port {n} out of range"))
    }

    async fn http_get(&self, a: &HTTPGetAction) -> Result<(), String> {
        if a.scheme.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("http")) {
            return Err("only HTTP probes are supported".into());
        }
        let port = self.port(&a.port)?;
        let host = a.host.clone().unwrap_or_else(|| self.ip.to_string());
        let mut stream = TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/goim-e2e\r\nAccept: */*\r\nConnection: close\r\n",
            a.path.as_deref().unwrap_or("/")
        );
        for h in a.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        // The status line is all a probe needs.
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let code: u16 =
            line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("no HTTP status line")?;
        if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP {code}")) }
    }

    async fn tcp(&self, a: &TCPSocketAction) -> Result<(), String> {
        let host = a.host.clone().unwrap_or_else(|| self.ip.to_string());
        TcpStream::connect((host.as_str(), self.port(&a.port)?)).await.map(drop).map_err(|e| e.to_string())
    }

    async fn exec(&self, a: &ExecAction) -> Result<(), String> {
        let argv = a.command.as_deref().unwrap_or_default();
        let (first, args) = argv.split_first().ok_or("an empty exec command")?;
        let program =
            process::resolve(first, self.image_dir.as_deref()).ok_or_else(|| format!("{first} not found"))?;
        let status = process::exec_in(self.pid, &program, args, &self.env)
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if status.success() { Ok(()) } else { Err(format!("exit {status}")) }
    }
}

/// One check of a probe, bounded by its timeout.
pub async fn check(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(a) = &probe.http_get {
            target.http_get(a).await
        } else if let Some(a) = &probe.tcp_socket {
            target.tcp(a).await
        } else if let Some(a) = &probe.exec {
            target.exec(a).await
        } else {
            Err("only httpGet, tcpSocket and exec probes are supported".into())
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

/// Runs `probe` after its initial delay, once a period, and calls `changed` when its result
/// flips: `true` after successThreshold successes in a row, `false` after failureThreshold
/// failures in a row. `state` is the result before the first check (`None`: unknown, as for a
/// startup probe). Returns what `changed` breaks with.
pub async fn run<T>(
    probe: &Probe,
    target: &Target,
    mut state: Option<bool>,
    mut changed: impl FnMut(bool) -> ControlFlow<T>,
) -> T {
    let secs = |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
    let (need_ok, need_fail) =
        (probe.success_threshold.unwrap_or(1).max(1), probe.failure_threshold.unwrap_or(3).max(1));
    tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
    let (mut oks, mut fails) = (0, 0);
    loop {
        let started = tokio::time::Instant::now();
        match check(probe, target).await {
            Ok(()) => (oks, fails) = (oks + 1, 0),
            Err(e) => {
                (oks, fails) = (0, fails + 1);
                tracing::debug!(error = %e, ip = %target.ip, "probe failed");
            }
        }
        let now = if oks >= need_ok {
            Some(true)
        } else if fails >= need_fail {
            Some(false)
        } else {
            state
        };
        if now != state {
            state = now;
            if let Some(v) = now
                && let ControlFlow::Break(t) = changed(v)
            {
                return t;
            }
        }
        tokio::time::sleep_until(started + period).await;
    }
}

/// A preStop (or postStart) hook, to completion or until `limit`.
pub async fn hook(h: &LifecycleHandler, target: &Target, limit: Duration) -> Result<(), String> {
    let run = async {
        if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            Ok(())
        } else if let Some(a) = &h.http_get {
            target.http_get(a).await
        } else if let Some(a) = &h.exec {
            target.exec(a).await
        } else if let Some(a) = &h.tcp_socket {
            target.tcp(a).await
        } else {
            Err("an empty hook".into())
        }
    };
    tokio::time::timeout(limit, run).await.unwrap_or_else(|_| Err(format!("still running after {limit:?}")))
}
