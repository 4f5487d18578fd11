//! The `[discovery]` table: where job (and logic) learn which comets exist.
//!
//! ```toml
//! [discovery]
//! kind = "static"                 # or "kubernetes"
//! comets = [{ server_id = "comet-1", addr = "127.0.0.1:3109" }]
//! probe_interval = "0s"           # static only: TCP-probe each comet this often and unlist one
//!                                 # that refused or timed out PROBE_FAILURES times in a row (0s: off)
//! gone_grace = "30s"              # logic drops the routes of a comet unlisted this long
//!
//! [discovery.kubernetes]          # used when kind = "kubernetes"
//! service = "goim-comet-grpc"     # the comet headless Service
//! namespace = ""                  # default: the pod's own namespace
//! port_name = "grpc"              # the EndpointSlice port of comet's gRPC server
//! sync_timeout = "30s"            # how long start-up waits for the first complete list
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Error;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kind: Kind,
    /// The comets, when `kind = "static"`.
    pub comets: Vec<StaticComet>,
    /// Used when `kind = "kubernetes"`.
    pub kubernetes: KubernetesConfig,
    /// Static lists only: how often each comet's gRPC address is probed (a TCP connect). A comet
    /// that fails [`PROBE_FAILURES`] probes in a row leaves the list until a probe succeeds
    /// again, so a dead comet of a fixed fleet leaves discovery the way a dead pod leaves its
    /// EndpointSlice. `0s` (the default) never probes: the list is fixed.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long a comet must be gone from the list before logic deletes the routes (key and
    /// user → comet) that still name it. A comet listed again within it (a restart, a blip)
    /// keeps its routes. job never dispatches to an unlisted comet, whatever this is.
    /// Default 30s.
    #[serde(with = "humantime_serde")]
    pub gone_grace: Duration,
}

/// Consecutive failed probes that unlist a comet (see [`Config::probe_interval`]).
pub const PROBE_FAILURES: u32 = 2;

impl Default for Config {
    fn default() -> Config {
        Config {
            kind: Kind::default(),
            comets: Vec::new(),
            kubernetes: KubernetesConfig::default(),
            probe_interval: Duration::ZERO,
            gone_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The fixed list in `comets`.
    #[default]
    Static,
    /// The EndpointSlices of a comet headless Service (needs the `kubernetes` feature).
    Kubernetes,
}

/// One comet of a static list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticComet {
    /// Its `comet.server_id`.
    pub server_id: String,
    /// `host:port` of its gRPC server.
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The comet headless Service whose EndpointSlices are watched. Default `goim-comet-grpc`.
    pub service: String,
    /// Its namespace; empty means the namespace this pod runs in. Default empty.
    pub namespace: String,
    /// The name of comet's gRPC port on the Service; empty takes each slice's first port.
    /// Default `grpc`.
    pub port_name: String,
    /// How long start-up waits for the first complete list before failing. Default 30s.
    #[serde(with = "humantime_serde")]
    pub sync_timeout: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> KubernetesConfig {
        KubernetesConfig {
            service: "goim-comet-grpc".into(),
            namespace: String::new(),
            port_name: "grpc".into(),
            sync_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Checks the table (field names assume it sits at `discovery`).
    pub fn validate(&self) -> Result<(), Error> {
        let err = |field: &str, reason: String| Err(Error::new(field, reason));
        if self.gone_grace.is_zero() {
            return err("discovery.gone_grace", "must be more than 0s".into());
        }
        if self.kind == Kind::Kubernetes && !self.probe_interval.is_zero() {
            return err(
                "discovery.probe_interval",
                "applies to kind = \"static\" only (EndpointSlices already drop dead pods)".into(),
            );
        }
        match self.kind {
            Kind::Static => {
                if self.comets.is_empty() {
                    return err(
                        "discovery.comets",
                        "must list at least one comet when kind = \"static\"".into(),
                    );
                }
                let mut ids = std::collections::HashSet::new();
                for c in &self.comets {
                    if c.server_id.is_empty() {
                        return err("discovery.comets", "a comet has an empty server_id".into());
                    }
                    if !ids.insert(c.server_id.as_str()) {
                        return err(
                            "discovery.comets",
                            format!("server_id {:?} is listed twice", c.server_id),
                        );
                    }
                    if !is_host_port(&c.addr) {
                        return err("discovery.comets", format!("addr {:?} is not host:port", c.addr));
                    }
                }
                Ok(())
            }
            Kind::Kubernetes => {
                if !cfg!(feature = "kubernetes") {
                    return err("discovery.kind", "this build has no Kubernetes support".into());
                }
                let k = &self.kubernetes;
                if k.service.is_empty() {
                    return err("discovery.kubernetes.service", "must not be empty".into());
                }
                if k.sync_timeout.is_zero() {
                    return err("discovery.kubernetes.sync_timeout", "must be more than 0s".into());
                }
                Ok(())
            }
        }
    }
}

fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_list_parses() {
        let c: Config = toml::from_str(
            "kind = \"static\"\ncomets = [{ server_id = \"comet-1\", addr = \"127.0.0.1:3109\" }]\n",
        )
        .unwrap();
        assert_eq!(c.comets, [StaticComet { server_id: "comet-1".into(), addr: "127.0.0.1:3109".into() }]);
        assert_eq!((c.probe_interval, c.gone_grace), (Duration::ZERO, Duration::from_secs(30)));
        c.validate().unwrap();
    }

    #[test]
    fn a_kubernetes_table_parses_with_defaults() {
        let c: Config =
            toml::from_str("kind = \"kubernetes\"\n[kubernetes]\nservice = \"comets\"\n").unwrap();
        assert_eq!(c.kind, Kind::Kubernetes);
        assert_eq!(c.kubernetes.service, "comets");
        assert_eq!(c.kubernetes.port_name, "grpc");
        assert_eq!(c.kubernetes.sync_timeout, Duration::from_secs(30));
    }

    #[test]
    fn invalid_lists_name_their_field() {
        let field = |text: &str| toml::from_str::<Config>(text).unwrap().validate().unwrap_err().field;
        assert_eq!(field(""), "discovery.comets");
        assert_eq!(field("comets = [{ server_id = \"\", addr = \"a:1\" }]"), "discovery.comets");
        assert_eq!(field("comets = [{ server_id = \"c\", addr = \"nohost\" }]"), "discovery.comets");
        assert_eq!(
            field("comets = [{ server_id = \"c\", addr = \"a:1\" }, { server_id = \"c\", addr = \"b:1\" }]"),
            "discovery.comets"
        );
        assert_eq!(
            field("kind = \"kubernetes\"\n[kubernetes]\nservice = \"\""),
            if cfg!(feature = "kubernetes") { "discovery.kubernetes.service" } else { "discovery.kind" }
        );
    }

    #[test]
    fn the_grace_and_probe_interval_parse_and_are_checked() {
        let one = "comets = [{ server_id = \"c\", addr = \"a:1\" }]\n";
        let c: Config =
            toml::from_str(&format!("{one}probe_interval = \"500ms\"\ngone_grace = \"2s\"")).unwrap();
        assert_eq!((c.probe_interval, c.gone_grace), (Duration::from_millis(500), Duration::from_secs(2)));
        c.validate().unwrap();
        let field = |text: &str| toml::from_str::<Config>(text).unwrap().validate().unwrap_err().field;
        assert_eq!(field(&format!("{one}gone_grace = \"0s\"")), "discovery.gone_grace");
        assert_eq!(field("kind = \"kubernetes\"\nprobe_interval = \"1s\""), "discovery.probe_interval");
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused() {
        assert!(toml::from_str::<Config>("kind = \"consul\"").is_err());
        assert!(toml::from_str::<Config>("nodes = []").is_err());
    }
}
