//! What every binary (`goim`, the embedded process, and the tiers `goim-comet`, `goim-logic`,
//! `goim-job`) shares: the command line, logging, loading and checking the configuration, the
//! signal, and the exit code.
//!
//! Configuration is read in this order: the binary's built-in defaults ([`Settings::defaults`]:
//! the embedded process's differ from the tiers'), the TOML file over them (`--config` /
//! `GOIM_CONFIG`), then the environment overrides ([`crate::env`]), then defaults that come from
//! the environment ([`Settings::from_environment`], e.g. comet's server id from `POD_NAME`). The
//! result is deserialized (unknown keys refused) and validated before anything binds a port.
//! Invalid configuration exits with 64 (sysexits' `EX_USAGE`) and a message naming the field.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use goim_kit::Invalid;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

/// Exit code for unusable configuration (sysexits' EX_USAGE).
pub const EX_USAGE: u8 = 64;

/// A binary's configuration file type.
pub trait Settings: DeserializeOwned + Serialize + Default + Sized {
    /// The table the file is laid over, key by key: a key the file leaves out keeps this value
    /// even inside a table the file sets. The binary's defaults (`Default`), which may differ
    /// from its types' own (each tier's admin and gRPC port).
    fn defaults() -> toml::Table {
        toml::Table::try_from(Self::default()).expect("the defaults serialize to TOML")
    }
    /// Tables renamed, `(old, new)`: a file or override under the old name still loads, with a
    /// deprecation warning, for one release.
    const RENAMED: &'static [(&'static str, &'static str)] = &[];
    /// Fills defaults that come from the environment into the parsed table (after overrides).
    fn from_environment(_table: &mut toml::Table, _env: &HashMap<String, String>) {}
    /// Checks what serde cannot, naming the dotted field.
    fn validate(&self) -> Result<(), Invalid>;
}

/// A tier process: started from its settings, stopped on a signal.
pub trait Tier: Sized {
    type Settings: Settings;
    /// The binary's name, for messages.
    const NAME: &'static str;
    /// What `--help` says the binary is; empty: the package's description.
    const ABOUT: &'static str = "";
    /// Binds every listener and starts serving.
    fn start(settings: Self::Settings) -> impl Future<Output = anyhow::Result<Self>>;
    /// Shuts down in the house order; returns whether it finished within the grace period.
    fn stop(self) -> impl Future<Output = bool>;
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("environment override {0}")]
    Override(#[from] crate::env::Error),
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

/// Loads `path` (or nothing: all defaults), applies `vars` as overrides and environment
/// defaults, deserializes and validates.
pub fn load<S: Settings>(
    path: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<S, LoadError> {
    let name = path.map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
    let mut table = S::defaults();
    if let Some(p) = path {
        let text =
            std::fs::read_to_string(p).map_err(|source| LoadError::Read { path: name.clone(), source })?;
        let file = toml::from_str(&text)
            .map_err(|e| LoadError::Parse { path: name.clone(), source: Box::new(e) })?;
        overlay(&mut table, file);
    }
    let env: HashMap<String, String> = vars.into_iter().collect();
    let set = crate::env::apply(&mut table, env.iter().map(|(k, v)| (k.clone(), v.clone())))?;
    if !set.is_empty() {
        info!(keys = ?set, "configuration overridden from the environment");
    }
    rename_tables::<S>(&mut table);
    S::from_environment(&mut table, &env);
    let vars: Vec<(String, String)> = env.into_iter().collect();
    let settings: S = loop {
        let error = match table.clone().try_into() {
            Ok(s) => break s,
            Err(e) => e,
        };
        // An override read as a number where the setting is text (a Secret of digits): take
        // it as the text it is and try again. Each retry retypes one override.
        match failed_path(&error) {
            Some(p) if crate::env::as_text(&mut table, &vars, &p)? => continue,
            _ => return Err(LoadError::Parse { path: name, source: Box::new(error) }),
        }
    };
    settings.validate().map_err(LoadError::Invalid)?;
    Ok(settings)
}

/// Moves each table under a deprecated name (`S::RENAMED`) to its new name, warning once per
/// table; one given under both names is merged, the old name's keys last (it is usually an
/// older override).
fn rename_tables<S: Settings>(table: &mut toml::Table) {
    for (old, new) in S::RENAMED {
        let Some(value) = table.remove(*old) else { continue };
        warn!(
            "[{old}] is the old name of [{new}]: rename it (the old name is accepted until the next release)"
        );
        match (table.get_mut(*new), value) {
            (Some(toml::Value::Table(current)), toml::Value::Table(renamed)) => overlay(current, renamed),
            (_, value) => {
                table.insert((*new).to_owned(), value);
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime does for goim: every
/// connection is a file, and the soft limit is often 1024 (systemd's default) while the hard one
/// allows far more. Logs what it did; a failure leaves the limit as it was.
pub fn raise_open_files() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let (ok, raised) = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            (false, false)
        } else if lim.rlim_cur < lim.rlim_max {
            let to = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            (libc::setrlimit(libc::RLIMIT_NOFILE, &to) == 0, true)
        } else {
            (true, false)
        }
    };
    match (ok, raised) {
        (true, true) => {
            info!(from = lim.rlim_cur, to = lim.rlim_max, "open files limit raised to the hard limit")
        }
        (true, false) => info!(limit = lim.rlim_cur, "open files limit"),
        (false, _) => warn!(soft = lim.rlim_cur, hard = lim.rlim_max, "cannot raise the open files limit"),
    }
}

/// Writes `top` over `base`, table by table.
pub(crate) fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The dotted path a deserialization error names (its last line: ``in `logic.http.push_token` ``).
fn failed_path(error: &toml::de::Error) -> Option<String> {
    let text = error.to_string();
    let line = text.lines().rev().find(|l| l.starts_with("in `"))?;
    Some(line.strip_prefix("in `")?.strip_suffix('`')?.to_owned())
}

#[derive(Parser)]
#[command(version = crate::VERSION)]
struct Args {
    /// TOML configuration file (see examples/goim.toml, and examples/distributed/ for the tiers).
    #[arg(long, short, env = "GOIM_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration (the file, the environment overrides, validation) and exit:
    /// 0 when the binary would start with it, 64 and the reason otherwise. Reads no other
    /// file and binds nothing: goim-operator runs it on every rendered file before applying.
    #[arg(long, conflicts_with = "print_config")]
    check_config: bool,
}

/// The whole `main` of a binary.
pub fn main<T: Tier>() -> ExitCode {
    // Logs go to stderr, so `--print-config` output on stdout stays valid TOML.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Named after the binary, not the package (`goim-comet 0.1.0 (abc1234)` for --version).
    let mut command = Args::command().name(T::NAME).bin_name(T::NAME);
    if !T::ABOUT.is_empty() {
        command = command.about(T::ABOUT);
    }
    let matches = command.get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let settings: T::Settings = match load(args.config.as_deref(), std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "configuration");
            eprintln!("{}: {e}", T::NAME);
            return ExitCode::from(EX_USAGE);
        }
    };
    if args.check_config {
        return ExitCode::SUCCESS;
    }
    if args.print_config {
        return match toml::to_string_pretty(&settings) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", T::NAME);
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", T::NAME);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run::<T>(settings))
}

async fn run<T: Tier>(settings: T::Settings) -> ExitCode {
    raise_open_files();
    let tier = match T::start(settings).await {
        Ok(t) => t,
        Err(e) => {
            error!(error = format!("{e:#}"), "cannot start");
            eprintln!("{}: {e:#}", T::NAME);
            return ExitCode::FAILURE;
        }
    };
    crate::signal::terminate().await;
    info!("signal received, shutting down");
    if tier.stop().await { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
