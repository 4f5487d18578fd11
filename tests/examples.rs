//! The example configurations stay whole. Each `.toml` file in `examples/` is checked against the
//! binary that reads it:
//!
//! - the binary loads it (`--config F --print-config`, and `--check-config` for the tiers);
//! - every key the binary then prints is in the file, so none can go missing from it;
//! - every key in the file, and every optional key it shows commented out (`# key = value`), is
//!   one the binary's configuration type takes, each tried on its own so all bad ones are named;
//! - `examples/goim.toml` promises the defaults, so its values must be what a bare
//!   `goim --print-config` prints. The distributed examples set values for one machine on
//!   purpose, so only their keys are compared.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use goim::distributed::{CometSettings, JobSettings, LogicSettings};

/// One example file and the binary that reads it.
struct Example {
    /// Relative to `examples/`.
    file: &'static str,
    binary: &'static str,
    /// Whether the file promises the binary's defaults as its values.
    defaults: bool,
}

const EXAMPLES: [Example; 4] = [
    Example { file: "goim.toml", binary: env!("CARGO_BIN_EXE_goim"), defaults: true },
    Example { file: "distributed/comet.toml", binary: env!("CARGO_BIN_EXE_goim-comet"), defaults: false },
    Example { file: "distributed/logic.toml", binary: env!("CARGO_BIN_EXE_goim-logic"), defaults: false },
    Example { file: "distributed/job.toml", binary: env!("CARGO_BIN_EXE_goim-job"), defaults: false },
];

#[test]
fn goim_example_lists_every_key_with_its_default() {
    check(&EXAMPLES[0]);
}

#[test]
fn comet_example_lists_every_key_goim_comet_knows() {
    check(&EXAMPLES[1]);
}

#[test]
fn logic_example_lists_every_key_goim_logic_knows() {
    check(&EXAMPLES[2]);
}

#[test]
fn job_example_lists_every_key_goim_job_knows() {
    check(&EXAMPLES[3]);
}

#[test]
fn every_example_file_is_checked() {
    let mut found = Vec::new();
    toml_files(&examples_dir(), &mut found);
    let checked: BTreeSet<PathBuf> = EXAMPLES.iter().map(|e| examples_dir().join(e.file)).collect();
    let unchecked: Vec<_> = found.iter().filter(|f| !checked.contains(*f)).collect();
    assert!(unchecked.is_empty(), "example files no test compares with a binary: {unchecked:?}");
}

/// Runs every comparison for `example` and fails with all the problems found, not the first.
fn check(example: &Example) {
    let path = examples_dir().join(example.file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", example.file));
    let written = leaves(&file);
    let bin = name(example.binary);
    let mut problems = Vec::new();

    // What the binary makes of the file. goim-logic and goim-job print nothing without one: their
    // defaults alone do not validate (logic's JWT needs a key, job needs comets to dispatch to).
    let effective = printed(example.binary, Some(&path)).map(|t| leaves(&t));
    if let Err(e) = &effective {
        problems.push(format!("`{bin} --config {} --print-config` fails: {e}", example.file));
    }
    let defaults = printed(example.binary, None).map(|t| leaves(&t));
    if bin != "goim" {
        let out = run(example.binary, &["--check-config", "--config", path.to_str().unwrap()]);
        if !out.status.success() {
            problems.push(format!(
                "`--check-config` refuses it: {}",
                one_line(&String::from_utf8_lossy(&out.stderr))
            ));
        }
    }

    if let Ok(printed) = effective.as_ref().or(defaults.as_ref()) {
        for (key, value) in printed.iter().filter(|(k, _)| !written.contains_key(*k)) {
            problems.push(format!("missing `{key}` (printed as {value})"));
        }
    }
    let mut unknown = BTreeSet::new();
    for (key, value) in &written {
        if let Err(e) = known(bin, key, value.clone()) {
            problems.push(format!("`{key}`: {bin} does not take it: {e}"));
            unknown.insert(key);
        } else if effective.as_ref().is_ok_and(|e| !e.contains_key(key)) {
            problems.push(format!("`{key}` is taken but not printed back (a deprecated name?)"));
        }
    }
    if example.defaults {
        let defaults = defaults.as_ref().unwrap_or_else(|e| panic!("{bin} --print-config: {e}"));
        for (key, value) in written.iter().filter(|(k, _)| !unknown.contains(k)) {
            match defaults.get(key) {
                Some(default) if value != default => {
                    problems.push(format!("`{key}` is {value}, the default is {default}"))
                }
                // Optional keys (no default, so not printed) are shown commented out.
                None => problems.push(format!("`{key}` has no default: write it commented out")),
                _ => {}
            }
        }
    }
    for (key, value) in commented_keys(&text) {
        if let Err(e) = known(bin, &key, value) {
            problems.push(format!("commented-out `{key}`: {bin} does not take it: {e}"));
        }
    }

    assert!(problems.is_empty(), "examples/{} against {bin}:\n  {}", example.file, problems.join("\n  "));
}

/// `binary --print-config` (with `--config file` when given), parsed.
fn printed(binary: &str, file: Option<&Path>) -> Result<toml::Table, String> {
    let mut args = vec!["--print-config"];
    if let Some(f) = file {
        args.extend(["--config", f.to_str().unwrap()]);
    }
    let out = run(binary, &args);
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, one_line(&String::from_utf8_lossy(&out.stderr))));
    }
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).map_err(|e| format!("output is not TOML: {e}"))
}

/// Runs `binary` without the environment's config overrides, so only the file and the defaults
/// count.
fn run(binary: &str, args: &[&str]) -> Output {
    let mut command = Command::new(binary);
    // No log lines: goim logs to stdout, where --print-config writes, and the tiers' error log
    // repeats the message they print.
    command.args(args).env("RUST_LOG", "off");
    for (var, _) in std::env::vars() {
        if var.starts_with("GOIM_") || var == "POD_NAME" {
            command.env_remove(var);
        }
    }
    command.output().unwrap_or_else(|e| panic!("cannot run {binary}: {e}"))
}

/// A key's path from the top of the file: `["comet", "websocket", "tls", "bind"]`. A list, not a
/// dotted string, because a key may itself hold a dot (`"compression.type"` in
/// `[kafka.properties]`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key(Vec<String>);

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bare =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let parts: Vec<String> =
            self.0.iter().map(|p| if bare(p) { p.clone() } else { format!("{p:?}") }).collect();
        f.write_str(&parts.join("."))
    }
}

/// Every key with its value. An array (of values or of inline tables) is one value; an empty
/// table is kept as a key of its own, so its header must be written too.
fn leaves(table: &toml::Table) -> BTreeMap<Key, toml::Value> {
    fn walk(table: &toml::Table, prefix: &[String], out: &mut BTreeMap<Key, toml::Value>) {
        for (k, v) in table {
            let key = [prefix, std::slice::from_ref(k)].concat();
            match v {
                toml::Value::Table(t) if !t.is_empty() => walk(t, &key, out),
                v => {
                    out.insert(Key(key), v.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(table, &[], &mut out);
    out
}

/// The optional keys a file shows as comments: `# key = value` lines under a `[table]` header or
/// under a commented `# [table]` header, with their example values. Prose lines are not TOML
/// and are passed over.
fn commented_keys(text: &str) -> Vec<(Key, toml::Value)> {
    let mut table = Vec::new();
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if body.starts_with('[') {
            if let Ok(header) = toml::from_str::<toml::Table>(body) {
                table = leaves(&header).into_keys().next().map(|k| k.0).unwrap_or_default();
            }
            continue;
        }
        if !commented {
            continue;
        }
        if let Ok(kv) = toml::from_str::<toml::Table>(body) {
            for (key, value) in leaves(&kv) {
                keys.push((Key([table.clone(), key.0].concat()), value));
            }
        }
    }
    keys
}

/// Whether the configuration type of `bin` takes `key = value` (over its defaults). Only
/// deserialized, not validated: each key is tried alone, so every unknown one is named (serde
/// stops at the first), and optional keys shown side by side may exclude each other.
fn known(bin: &str, key: &Key, value: toml::Value) -> Result<(), String> {
    let (last, parents) = key.0.split_last().unwrap();
    let mut table = toml::Table::new();
    let mut at = &mut table;
    for part in parents {
        at = at.entry(part).or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut().unwrap();
    }
    at.insert(last.clone(), value);
    let value = toml::Value::Table(table);
    let result = match bin {
        "goim" => goim::Config::parse(&toml::to_string(&value).unwrap()).map(drop).map_err(|e| e.to_string()),
        "goim-comet" => deserializes::<CometSettings>(value),
        "goim-logic" => deserializes::<LogicSettings>(value),
        "goim-job" => deserializes::<JobSettings>(value),
        other => panic!("no configuration type for {other}"),
    };
    result.map_err(|e| one_line(&e))
}

/// One line per problem in the report.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn deserializes<S: serde::de::DeserializeOwned>(value: toml::Value) -> Result<(), String> {
    value.try_into::<S>().map(drop).map_err(|e| e.to_string())
}

fn name(binary: &str) -> &str {
    Path::new(binary).file_name().and_then(|n| n.to_str()).unwrap_or(binary)
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}
