//! The embedded process's configuration: one TOML file with a table per tier.

use std::time::Duration;

use goim_kit::Invalid;
use serde::{Deserialize, Serialize};

use crate::process::Settings;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub admin: Admin,
    pub shutdown: Shutdown,
    pub comet: goim_comet::Config,
    pub logic: goim_logic::Config,
    pub job: goim_job::Config,
}

/// `[admin]`, in every binary: `/metrics`, `/healthz`, `/readyz` (and comet's `/drain`). Each
/// binary defaults it to its own port (embedded and comet 3100, logic 3110, job 3120: the
/// binary's defaults, which the file is laid over).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Listen address, `ip:port`.
    pub addr: String,
}

impl Admin {
    pub(crate) fn on_port(port: u16) -> Admin {
        Admin { addr: format!("0.0.0.0:{port}") }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        match self.addr.parse::<std::net::SocketAddr>() {
            Ok(_) => Ok(()),
            Err(e) => Err(Invalid::new("admin.addr", format!("{:?} is not ip:port ({e})", self.addr))),
        }
    }
}

/// `[shutdown]`, in every binary.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Shutdown {
    /// How long shutdown may take: clients are told (op 6) and connections closed within it.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for Admin {
    fn default() -> Admin {
        Admin::on_port(3100)
    }
}

impl Shutdown {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.grace.is_zero() {
            Err(Invalid::new("shutdown.grace", "must be more than 0s"))
        } else {
            Ok(())
        }
    }
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown { grace: Duration::from_secs(20) }
    }
}

impl Default for Config {
    /// The embedded defaults: goim's ports, and goim's JSON token accepted so goim clients work
    /// out of the box (logic warns at start that connections are not authenticated).
    fn default() -> Config {
        let mut logic = goim_logic::Config::default();
        logic.auth.mode = goim_logic::config::AuthMode::Json;
        // The demo page (served by comet on another port) calls the push API from the browser.
        logic.http.cors_origins = vec!["*".into()];
        Config {
            admin: Admin::default(),
            shutdown: Shutdown::default(),
            comet: goim_comet::Config::default(),
            logic,
            job: goim_job::Config::default(),
        }
    }
}

impl Config {
    /// Parses a config file over the embedded defaults: a key the file leaves out keeps the
    /// embedded default even inside a table the file sets (`[logic.http]` alone must not turn
    /// the embedded JSON-token auth into logic's own `jwt` default).
    pub fn parse(text: &str) -> Result<Config, Box<toml::de::Error>> {
        let file: toml::Table = toml::from_str(text).map_err(Box::new)?;
        let mut merged = <Config as Settings>::defaults();
        crate::process::overlay(&mut merged, file);
        merged.try_into().map_err(Box::new)
    }

    /// Checks every table; logic's and job's fields are named under `logic` and `job`.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.comet.validate()?;
        self.logic.validate().map_err(|e| e.within("logic"))?;
        self.job.validate().map_err(|e| e.within("job"))?;
        self.admin.validate()?;
        self.shutdown.validate()
    }
}

/// The embedded process is loaded like the tiers (`process::load`: file, then `GOIM_*` overrides),
/// over the embedded defaults rather than the tiers' types' own.
impl Settings for Config {
    fn validate(&self) -> Result<(), Invalid> {
        Config::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_embedded_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        assert_eq!(c.logic.auth.mode, goim_logic::config::AuthMode::Json);
    }

    #[test]
    fn a_file_with_a_logic_table_still_gets_the_embedded_auth_default() {
        let c = Config::parse("[logic.http]\naddr = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.logic.auth.mode, goim_logic::config::AuthMode::Json);
        assert_eq!(c.logic.http.cors_origins, ["*"]);
        let c = Config::parse("[logic.auth]\nmode = \"jwt\"\n").unwrap();
        assert_eq!(c.logic.auth.mode, goim_logic::config::AuthMode::Jwt);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = Config::parse("[comet]\nmax_conections = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_conections"), "{err}");
    }

    #[test]
    fn the_example_config_parses_and_is_valid() {
        let text = include_str!("../examples/goim.toml");
        Config::parse(text).unwrap().validate().unwrap();
    }

    #[test]
    fn the_admin_and_shutdown_tables_are_the_tiers_and_validated_alike() {
        let err = Config::parse("[admin]\naddr = \"nope\"\n").unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("admin.addr: \"nope\" is not ip:port"), "{err}");
        let err = Config::parse("[shutdown]\ngrace = \"0s\"\n").unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("shutdown.grace"), "{err}");
        // An empty [admin] keeps the binary's default (the embedded 3100).
        assert_eq!(Config::parse("[admin]\n").unwrap().admin, Admin::on_port(3100));
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err = Config::parse("[job.room]\nbatch = 0\n").unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("job.room.batch"), "{err}");
    }
}
