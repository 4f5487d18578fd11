//! The `[discovery]` table: where job (and logic) learn which comets exist.
//!
//! ```toml
//! [discovery]
//! kind = "static"                 # or "kubernetes"
//! comets = [{ server_id = "comet-1", addr = "127.0.0.1:3109" }]
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kind: Kind,
    /// The comets, when `kind = "static"`.
    pub comets: Vec<StaticComet>,
    /// Used when `kind = "kubernetes"`.
    pub kubernetes: KubernetesConfig,
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
        let err = |field, reason: String| Err(Error { field, reason });
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
    fn unknown_keys_and_kinds_are_refused() {
        assert!(toml::from_str::<Config>("kind = \"consul\"").is_err());
        assert!(toml::from_str::<Config>("nodes = []").is_err());
    }
}
