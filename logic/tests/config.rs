//! Parsing and validating logic's TOML config.

use std::time::Duration;

use goim_logic::Config;
use goim_logic::config::{AuthMode, BackoffConfig};

fn parse(text: &str) -> Result<Config, toml::de::Error> {
    toml::from_str(text)
}

fn jwt_hs256() -> Config {
    let mut config = Config::default();
    config.auth.jwt.secret = Some("s3cret".into());
    config
}

#[test]
fn an_empty_file_gives_goims_defaults_with_jwt_auth() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.http.addr, "0.0.0.0:3111");
    assert_eq!(config.http.max_body, 65536);
    assert_eq!(config.auth.mode, AuthMode::Jwt);
    assert_eq!(config.auth.jwt.leeway, Duration::from_secs(30));
    assert_eq!(config.node.heartbeat, Duration::from_secs(240));
    assert_eq!((config.node.tcp_port, config.node.ws_port, config.node.wss_port), (3101, 3102, 3103));
    assert_eq!(
        config.node.backoff,
        BackoffConfig { max_delay: 300, base_delay: 3, factor: 1.8, jitter: 0.3 }
    );
    assert_eq!(config.session.online_stale_after, Duration::from_secs(30));
    assert_eq!(config.session.mapping_ttl, Duration::from_secs(1800));
}

#[test]
fn heartbeat_timeout_defaults_to_heartbeat_times_heartbeat_max() {
    let mut config = Config::default();
    assert_eq!(config.heartbeat_timeout(), Duration::from_secs(8 * 60));
    config.node.heartbeat = Duration::from_secs(30);
    config.node.heartbeat_max = 3;
    assert_eq!(config.heartbeat_timeout(), Duration::from_secs(90));
    config.session.heartbeat_timeout = Some(Duration::from_secs(5));
    assert_eq!(config.heartbeat_timeout(), Duration::from_secs(5));
}

#[test]
fn durations_are_humantime_strings() {
    let config = parse(
        "[node]\nheartbeat = \"30s\"\n[session]\nheartbeat_timeout = \"1m 30s\"\n[auth.jwt]\nleeway = \"5s\"\n",
    )
    .unwrap();
    assert_eq!(config.node.heartbeat, Duration::from_secs(30));
    assert_eq!(config.session.heartbeat_timeout, Some(Duration::from_secs(90)));
    assert_eq!(config.auth.jwt.leeway, Duration::from_secs(5));
}

#[test]
fn unknown_keys_are_rejected_at_every_level() {
    for text in ["bogus = 1", "[http]\nadr = \"x\"", "[auth.jwt]\nkey = \"x\"", "[node.backoff]\nfoo = 1"] {
        assert!(parse(text).is_err(), "{text:?} was accepted");
    }
}

#[test]
fn the_default_config_fails_validation_because_jwt_has_no_secret() {
    let err = Config::default().validate().unwrap_err();
    assert_eq!(err.field, "auth.jwt.secret");
    assert!(jwt_hs256().validate().is_ok());
}

#[test]
fn json_mode_needs_no_key_material() {
    let config = parse("[auth]\nmode = \"json\"").unwrap();
    assert_eq!(config.auth.mode, AuthMode::Json);
    assert!(config.validate().is_ok());
}

#[test]
fn rs256_and_es256_need_a_public_key_path() {
    for alg in ["RS256", "ES256"] {
        let text = format!("[auth.jwt]\nalgorithm = \"{alg}\"");
        assert_eq!(parse(&text).unwrap().validate().unwrap_err().field, "auth.jwt.public_key_pem");
        let text = format!("{text}\npublic_key_pem = \"/etc/goim/jwt.pem\"");
        assert!(parse(&text).unwrap().validate().is_ok(), "{alg}");
    }
}

#[test]
fn validate_names_the_bad_field() {
    type Breaker = fn(&mut Config);
    let cases: [(Breaker, &str); 8] = [
        (|c| c.http.addr = "3111".into(), "http.addr"),
        (|c| c.http.push_token = Some(String::new()), "http.push_token"),
        (|c| c.http.max_body = 0, "http.max_body"),
        (|c| c.http.cors_origins = vec!["example.com".into()], "http.cors_origins"),
        (|c| c.node.heartbeat = Duration::from_millis(10), "node.heartbeat"),
        (|c| c.node.heartbeat_max = 0, "node.heartbeat_max"),
        (|c| c.session.online_stale_after = Duration::ZERO, "session.online_stale_after"),
        (|c| c.queue.capacity = 0, "queue.capacity"),
    ];
    for (break_it, field) in cases {
        let mut config = jwt_hs256();
        break_it(&mut config);
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.to_string().starts_with(field), "{err}");
    }
}

#[test]
fn a_config_serializes_to_toml_that_parses_back_unchanged() {
    let mut config = jwt_hs256();
    config.http.push_token = Some("t".into());
    config.http.cors_origins = vec!["http://localhost:3102".into()];
    config.session.heartbeat_timeout = Some(Duration::from_secs(90));
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("heartbeat = \"4m\""), "{text}");
    assert_eq!(parse(&text).unwrap(), config);
    assert_eq!(parse(&toml::to_string(&Config::default()).unwrap()).unwrap(), Config::default());
}

#[test]
fn the_rotation_keys_have_defaults_and_validate_by_name() {
    let config = Config::default();
    let jwks = &config.auth.jwt.jwks;
    assert_eq!((jwks.file.as_ref(), jwks.url.as_ref()), (None, None));
    assert_eq!((jwks.file_poll, jwks.url_refresh), (Duration::from_secs(10), Duration::from_secs(300)));
    assert_eq!(
        (jwks.url_retry, jwks.url_timeout, jwks.max_bytes),
        (Duration::from_secs(30), Duration::from_secs(5), 1 << 20)
    );
    assert_eq!(
        (config.http.push_token_file_poll, config.http.push_token_file_max_bytes),
        (Duration::from_secs(10), 65536)
    );
    assert!(config.http.push_tokens.is_empty());

    // A JWKS alone is enough key material for jwt mode.
    let jwks_only = parse("[auth.jwt.jwks]\nurl = \"https://id.example/.well-known/jwks.json\"").unwrap();
    assert!(jwks_only.validate().is_ok());
    let jwks_only =
        parse("[auth.jwt.jwks]\nfile = \"/etc/goim/jwks/jwks.json\"\nfile_poll = \"1s\"").unwrap();
    assert!(jwks_only.validate().is_ok());

    type Breaker = fn(&mut Config);
    let cases: [(Breaker, &str); 10] = [
        (|c| c.auth.jwt.jwks.url = Some("ftp://id.example/jwks".into()), "auth.jwt.jwks.url"),
        (|c| c.auth.jwt.jwks.url = Some("not a url".into()), "auth.jwt.jwks.url"),
        (|c| c.auth.jwt.jwks.file = Some("".into()), "auth.jwt.jwks.file"),
        (|c| c.auth.jwt.jwks.file_poll = Duration::ZERO, "auth.jwt.jwks.file_poll"),
        (|c| c.auth.jwt.jwks.url_refresh = Duration::from_millis(1), "auth.jwt.jwks.url_refresh"),
        (|c| c.auth.jwt.jwks.url_timeout = Duration::ZERO, "auth.jwt.jwks.url_timeout"),
        (|c| c.auth.jwt.jwks.max_bytes = 0, "auth.jwt.jwks.max_bytes"),
        (|c| c.http.push_tokens = vec!["ok".into(), "has space".into()], "http.push_tokens"),
        (|c| c.http.push_token_file_poll = Duration::ZERO, "http.push_token_file_poll"),
        (|c| c.http.push_token_file_max_bytes = 0, "http.push_token_file_max_bytes"),
    ];
    for (break_it, field) in cases {
        let mut config = jwt_hs256();
        break_it(&mut config);
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().starts_with(field), "{err}");
    }
}

#[test]
fn the_rotation_keys_serialize_and_parse_back() {
    let mut config = jwt_hs256();
    config.auth.jwt.jwks.file = Some("/etc/goim/jwks.json".into());
    config.auth.jwt.jwks.url = Some("http://127.0.0.1:8080/jwks".into());
    config.http.push_tokens = vec!["a".into(), "b".into()];
    config.http.push_token_file = Some("/etc/goim/push/tokens".into());
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("[auth.jwt.jwks]") && text.contains("url_refresh = \"5m\""), "{text}");
    assert_eq!(parse(&text).unwrap(), config);
}
