//! Each tier's rendered file is checked by that tier's own binary (`goim-<tier> --check-config`)
//! before anything is applied: a typo in `spec.<tier>.config` (an unknown key, a value of the
//! wrong type, a value the binary refuses) is reported with the binary's own message, and no
//! child is touched, so nothing rolls.
//!
//! The operator does not link the tier crates, so it runs their binaries: the operator image
//! carries `goim-comet`, `goim-logic` and `goim-job` beside `goim-operator`
//! (`GOIM_OPERATOR_TIER_BINARIES` names another folder). The check sees the file and the
//! environment the pod would see: the container's literal env values, the downward-API values,
//! and a placeholder for each Secret value (the operator does not read users' Secrets). A file
//! that passed is remembered by its hash, so an unchanged cluster runs no check.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;

use crate::render::{self, Children, Tier, config};

/// The environment variable naming the folder of the tier binaries.
pub const BINARIES_ENV: &str = "GOIM_OPERATOR_TIER_BINARIES";
/// How long one check may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Passed checks remembered at most (then forgotten all at once).
const REMEMBERED: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The binary refused the file: its message, naming the file by its path in the pod.
    #[error("spec.{tier}.config: {message}")]
    Refused { tier: &'static str, message: String },
    #[error("cannot check {tier}'s configuration: {reason}")]
    Unavailable { tier: &'static str, reason: String },
}

/// Runs the tier binaries' `--check-config`.
pub struct Checker {
    dir: PathBuf,
    passed: Mutex<HashSet<String>>,
    scratch: PathBuf,
    runs: AtomicU64,
}

/// Names the checked files apart, for every Checker of the process.
static FILES: AtomicU64 = AtomicU64::new(0);

impl Checker {
    /// The binaries in `dir`; fails when one is missing or does not run.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Checker, String> {
        let dir = dir.into();
        for tier in Tier::ALL {
            let path = dir.join(tier.binary());
            let out = std::process::Command::new(&path)
                .arg("--version")
                .env_clear()
                .output()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if !out.status.success() {
                return Err(format!("{} --version exited with {}", path.display(), out.status));
            }
        }
        Ok(Checker {
            dir,
            passed: Mutex::default(),
            scratch: std::env::temp_dir().join(format!("goim-operator-check-{}", std::process::id())),
            runs: AtomicU64::new(0),
        })
    }

    /// The binaries in `$GOIM_OPERATOR_TIER_BINARIES`, else beside the running executable (or
    /// one folder up, where Cargo puts them for a test binary in `deps/`).
    pub fn locate() -> Result<Checker, String> {
        if let Some(dir) = std::env::var_os(BINARIES_ENV) {
            return Checker::new(PathBuf::from(dir));
        }
        let exe = std::env::current_exe().map_err(|e| format!("the running executable: {e}"))?;
        let mut tried = Vec::new();
        for dir in exe.ancestors().skip(1).take(2) {
            match Checker::new(dir) {
                Ok(c) => return Ok(c),
                Err(e) => tried.push(e),
            }
        }
        Err(format!("no tier binaries (set {BINARIES_ENV}): {}", tried.join("; ")))
    }

    /// How many times a binary ran (a remembered file runs none).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Checks every tier's file of `children`.
    pub async fn check_all(&self, children: &Children, namespace: &str) -> Result<(), CheckError> {
        for d in &children.deployments {
            let Some(tier) = tier_of(d) else { continue };
            let text = file_text(&children.config_maps, tier).ok_or_else(|| CheckError::Unavailable {
                tier: tier.as_str(),
                reason: "no rendered ConfigMap".into(),
            })?;
            self.check(tier, &text, &pod_env(d, namespace)).await?;
        }
        Ok(())
    }

    /// Checks one tier's file with the environment its pod would have.
    pub async fn check(&self, tier: Tier, text: &str, env: &[(String, String)]) -> Result<(), CheckError> {
        let key = render::sha256_hex(format!("{}\n{text}\n{env:?}", tier.as_str()).as_bytes());
        if self.passed.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return Ok(());
        }
        let unavailable = |reason: String| CheckError::Unavailable { tier: tier.as_str(), reason };
        std::fs::create_dir_all(&self.scratch).map_err(|e| unavailable(e.to_string()))?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let file = self.scratch.join(format!("{n}-{}", config::file_name(tier)));
        std::fs::write(&file, text).map_err(|e| unavailable(e.to_string()))?;
        let result = self.run(tier, &file, env).await;
        let _ = std::fs::remove_file(&file);
        let output = result.map_err(unavailable)?;
        if output.status.success() {
            let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
            if passed.len() >= REMEMBERED {
                passed.clear();
            }
            passed.insert(key);
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The binary prints "goim-comet: <path>: <error>"; the file is named by its pod path.
        let in_pod = format!("{}/{}", config::CONFIG_DIR, config::file_name(tier));
        let message = without_name(stderr.trim_end(), tier).replace(&file.display().to_string(), &in_pod);
        match output.status.code() {
            Some(64) => Err(CheckError::Refused { tier: tier.as_str(), message }),
            code => Err(unavailable(format!("exit {code:?}: {message}"))),
        }
    }

    async fn run(
        &self,
        tier: Tier,
        file: &Path,
        env: &[(String, String)],
    ) -> Result<std::process::Output, String> {
        let child = tokio::process::Command::new(self.dir.join(tier.binary()))
            .arg("--check-config")
            .arg("--config")
            .arg(file)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Only the one-line message, not the log's copy of it.
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
        }
    }
}

/// The message without the binary's name in front of its lines.
fn without_name(message: &str, tier: Tier) -> String {
    let prefix = format!("{}: ", tier.binary());
    message.lines().map(|l| l.strip_prefix(&prefix).unwrap_or(l)).collect::<Vec<_>>().join("\n")
}

fn tier_of(d: &Deployment) -> Option<Tier> {
    let component = d.metadata.labels.as_ref()?.get("app.kubernetes.io/component")?;
    Tier::ALL.into_iter().find(|t| t.as_str() == component)
}

fn file_text(maps: &[ConfigMap], tier: Tier) -> Option<String> {
    maps.iter()
        .filter(|m| {
            m.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/component"))
                == Some(&tier.as_str().to_owned())
        })
        .find_map(|m| m.data.as_ref()?.get(&config::file_name(tier)).cloned())
}

/// The environment the tier's container would get, a placeholder standing in for each value
/// the operator does not read (Secrets, ConfigMap keys, resource fields).
pub fn pod_env(d: &Deployment, namespace: &str) -> Vec<(String, String)> {
    let Some(spec) = d.spec.template.spec.as_ref() else { return Vec::new() };
    let Some(container) = spec.containers.first() else { return Vec::new() };
    let pod = format!("{}-check", d.metadata.name.clone().unwrap_or_default());
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                    Some("metadata.name") => pod.clone(),
                    Some("metadata.namespace") => namespace.to_owned(),
                    _ => placeholder(&e.name),
                },
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// A value of the right shape for a Secret-held setting.
fn placeholder(var: &str) -> String {
    if var.ends_with("__URL") {
        "redis://secret.invalid:6379/0".into()
    } else {
        "secret-value-not-read-by-the-check".into()
    }
}
