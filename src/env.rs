//! Environment overrides of a TOML configuration, applied to the parsed table before it is
//! deserialized, so a container can change one setting without a new file.
//!
//! `GOIM_<PATH>=<value>`, where `<PATH>` is the dotted TOML path in upper case with `__` between
//! levels: `GOIM_COMET__SERVER_ID=comet-7` sets `comet.server_id`,
//! `GOIM_JOB__DISPATCH__TIMEOUT=2s` sets `job.dispatch.timeout`. Only variables with at least one
//! `__` are overrides (so `GOIM_CONFIG` and `GOIM_LOG` are not). The value is read as a TOML value
//! when it is one (`3`, `true`, `"text"`, `["127.0.0.1:3101"]`) and as a plain string otherwise
//! (`comet-7`, `2s`, `127.0.0.1:3119`); quote a string that would read as a number (`'"123"'`).
//! Overrides are applied in variable-name order; missing tables are created.

/// The prefix of every override variable.
pub const PREFIX: &str = "GOIM_";

/// An override that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{var}: empty level in the path")]
    EmptyLevel { var: String },
    #[error("{var}: {path} is a value, not a table")]
    NotATable { var: String, path: String },
}

/// Applies every override in `vars` (typically `std::env::vars()`) to `table`; returns the
/// dotted paths it set.
pub fn apply(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, Error> {
    let mut overrides: Vec<(String, String)> =
        vars.into_iter().filter(|(k, _)| k.starts_with(PREFIX) && k.contains("__")).collect();
    overrides.sort();
    let mut applied = Vec::with_capacity(overrides.len());
    for (var, raw) in overrides {
        let path: Vec<String> = var[PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::EmptyLevel { var });
        }
        set(table, &var, &path, value(&raw))?;
        applied.push(path.join("."));
    }
    Ok(applied)
}

fn set(table: &mut toml::Table, var: &str, path: &[String], value: toml::Value) -> Result<(), Error> {
    let (last, parents) = path.split_last().expect("split always yields one level");
    let mut current = table;
    for (i, key) in parents.iter().enumerate() {
        let entry = current.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(Error::NotATable { var: var.to_owned(), path: path[..=i].join(".") }),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Takes the override of the setting at the dotted `path` as its raw text, when it was read as
/// another TOML value (a number, a boolean, an array): the setting wants text, as a Secret's
/// token of digits does (`GOIM_LOGIC__HTTP__PUSH_TOKEN=123456`). Returns whether it did, so the
/// loader can deserialize again; a value that was already text is left alone.
pub fn as_text(table: &mut toml::Table, vars: &[(String, String)], path: &str) -> Result<bool, Error> {
    for (var, raw) in vars {
        if !var.starts_with(PREFIX) || !var.contains("__") {
            continue;
        }
        let levels: Vec<String> = var[PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if levels.join(".") != path || value(raw).is_str() {
            continue;
        }
        set(table, var, &levels, toml::Value::String(raw.clone()))?;
        return Ok(true);
    }
    Ok(false)
}

/// `raw` as a TOML value when it is exactly one, else as a string.
fn value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) if t.len() == 1 => t.remove("v").expect("the one key is v"),
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn applied(text: &str, pairs: &[(&str, &str)]) -> toml::Table {
        let mut t: toml::Table = toml::from_str(text).unwrap();
        apply(&mut t, vars(pairs)).unwrap();
        t
    }

    #[test]
    fn a_nested_key_is_set_with_double_underscores_between_levels() {
        let t = applied("[comet]\nserver_id = \"a\"\n", &[("GOIM_COMET__SERVER_ID", "comet-7")]);
        assert_eq!(t["comet"]["server_id"].as_str(), Some("comet-7"));
    }

    #[test]
    fn values_read_as_toml_when_they_are_and_as_strings_otherwise() {
        let t = applied(
            "",
            &[
                ("GOIM_A__INT", "3"),
                ("GOIM_A__BOOL", "true"),
                ("GOIM_A__LIST", "[\"127.0.0.1:1\", \"127.0.0.1:2\"]"),
                ("GOIM_A__DURATION", "2s"),
                ("GOIM_A__ADDR", "127.0.0.1:3119"),
                ("GOIM_A__QUOTED", "\"123\""),
                ("GOIM_A__INJECTED", "1\nb = 2"),
            ],
        );
        let a = &t["a"];
        assert_eq!(a["int"].as_integer(), Some(3));
        assert_eq!(a["bool"].as_bool(), Some(true));
        assert_eq!(a["list"].as_array().map(Vec::len), Some(2));
        assert_eq!(a["duration"].as_str(), Some("2s"));
        assert_eq!(a["addr"].as_str(), Some("127.0.0.1:3119"));
        assert_eq!(a["quoted"].as_str(), Some("123"));
        assert_eq!(a["injected"].as_str(), Some("1\nb = 2"), "a value never adds other keys");
    }

    #[test]
    fn an_override_read_as_a_number_can_be_taken_as_its_text() {
        let env = vars(&[("GOIM_LOGIC__HTTP__PUSH_TOKEN", "123456"), ("GOIM_A__NAME", "text")]);
        let mut t = toml::Table::new();
        apply(&mut t, env.clone()).unwrap();
        assert_eq!(t["logic"]["http"]["push_token"].as_integer(), Some(123456));
        assert!(as_text(&mut t, &env, "logic.http.push_token").unwrap());
        assert_eq!(t["logic"]["http"]["push_token"].as_str(), Some("123456"), "the digits as written");
        assert!(!as_text(&mut t, &env, "a.name").unwrap(), "already text");
        assert!(!as_text(&mut t, &env, "no.such.path").unwrap());
    }

    #[test]
    fn missing_tables_are_created_and_other_keys_kept() {
        let t = applied("[job.room]\nbatch = 5\n", &[("GOIM_JOB__DISPATCH__RETRIES", "1")]);
        assert_eq!(t["job"]["room"]["batch"].as_integer(), Some(5));
        assert_eq!(t["job"]["dispatch"]["retries"].as_integer(), Some(1));
    }

    #[test]
    fn variables_without_a_level_separator_or_prefix_are_not_overrides() {
        let t = applied("", &[("GOIM_CONFIG", "/etc/goim.toml"), ("GOIM_LOG", "debug"), ("HOME__X", "1")]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_value_in_the_way_of_a_table_is_an_error_naming_the_variable() {
        let mut t: toml::Table = toml::from_str("comet = 1\n").unwrap();
        let err = apply(&mut t, vars(&[("GOIM_COMET__SERVER_ID", "x")])).unwrap_err();
        assert_eq!(err.to_string(), "GOIM_COMET__SERVER_ID: comet is a value, not a table");
        let err = apply(&mut t, vars(&[("GOIM_COMET____X", "x")])).unwrap_err();
        assert!(matches!(err, Error::EmptyLevel { .. }));
    }

    #[test]
    fn later_variables_in_name_order_win_and_the_applied_paths_are_returned() {
        let mut t = toml::Table::new();
        let paths = apply(&mut t, vars(&[("GOIM_B__X", "2"), ("GOIM_A__X", "1")])).unwrap();
        assert_eq!(paths, ["a.x", "b.x"]);
    }
}
