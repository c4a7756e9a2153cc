//! The configuration file of `serve` (and `check-config`): a TOML table
//! whose keys are the long names of serve's flags (`max_fps` or
//! `max-fps` for `--max-fps`). Its settings become arguments placed
//! before the command line's, and every flag overrides itself, so a flag
//! given on the command line wins, and a flag added to `serve` is a key
//! of the file without more code.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, parser::ValueSource};

use crate::args::{Cli, ServeArgs};
use crate::exit::OrConfig;

/// Where the package installs the configuration.
pub const DEFAULT_CONFIG: &str = "/etc/latentcam/host.toml";

/// Names another default configuration file; empty for none (tests).
pub const CONFIG_ENV: &str = "LATENTCAM_HOST_CONFIG";

/// The configuration read without `--config`: `$LATENTCAM_HOST_CONFIG` if
/// set (empty: none), else [`DEFAULT_CONFIG`] — if the file exists.
pub fn default_config() -> Option<PathBuf> {
    latentcam_cli::default_config(CONFIG_ENV, DEFAULT_CONFIG)
}

/// The options of `serve` (or `check-config`) as the file and the command
/// line give them together.
pub struct Settings {
    /// The options.
    pub args: ServeArgs,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The subcommand's matches, for showing where each value came from.
    pub matches: ArgMatches,
}

impl Settings {
    /// `error`, found in these settings, with where they came from.
    pub fn blame(&self, error: anyhow::Error) -> anyhow::Error {
        match &self.file {
            Some(path) => error.context(format!(
                "in the settings of {} and the command line",
                path.display()
            )),
            None => error,
        }
    }

    /// The effective settings that differ from the defaults, as lines of
    /// a configuration file.
    pub fn to_toml(&self) -> String {
        let command = serve_command();
        let mut out = String::new();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(long) = arg.get_long() else { continue };
            if long == "config" || self.matches.value_source(id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let key = long.replace('-', "_");
            let value = match arg.get_action() {
                ArgAction::SetTrue => toml::Value::Boolean(true),
                action => {
                    let values: Vec<toml::Value> = self
                        .matches
                        .get_raw(id)
                        .into_iter()
                        .flatten()
                        .map(|value| toml::Value::String(value.to_string_lossy().into_owned()))
                        .collect();
                    match (action, values.len()) {
                        (ArgAction::Append, _) => toml::Value::Array(values),
                        (_, 1) => values.into_iter().next().expect("one value"),
                        _ => toml::Value::Array(values),
                    }
                }
            };
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    }
}

/// Reads `parsed`'s configuration file, if any, and parses the command
/// line `argv` again with the file's settings placed before the
/// subcommand's own arguments.
pub fn load(argv: &[OsString], parsed: ServeArgs) -> anyhow::Result<Settings> {
    let file = parsed.config.clone().or_else(|| {
        let path = default_config()?;
        tracing::info!("reading {} (--config names another file)", path.display());
        Some(path)
    });
    let Some(path) = file else {
        let matches = subcommand_matches(argv.to_vec())?;
        return Ok(Settings {
            args: parsed,
            file: None,
            matches,
        });
    };
    let from_file = arguments(&path).or_config()?;
    let subcommand = subcommand_position(argv)?;
    // The file alone must parse: then an error is the file's, named with
    // its key. Requirements and conflicts may involve the command line,
    // so they are left to the parse of both.
    let alone = std::iter::once(argv[0].clone())
        .chain(std::iter::once(argv[subcommand].clone()))
        .chain(from_file.iter().cloned());
    if let Err(error) = Cli::command().try_get_matches_from(alone) {
        use clap::error::ErrorKind::{ArgumentConflict, MissingRequiredArgument};
        if !matches!(error.kind(), ArgumentConflict | MissingRequiredArgument) {
            return Err(anyhow!(
                "{}: {}{}; fix the value or remove the key",
                path.display(),
                key_of(&error)
                    .map(|k| format!("key `{k}`: "))
                    .unwrap_or_default(),
                first_line(&error)
            ))
            .or_config();
        }
    }
    let combined: Vec<OsString> = argv[..=subcommand]
        .iter()
        .cloned()
        .chain(from_file)
        .chain(argv[subcommand + 1..].iter().cloned())
        .collect();
    let matches = subcommand_matches(combined)
        .with_context(|| format!("with the settings of {}", path.display()))
        .or_config()?;
    let args = ServeArgs::from_arg_matches(&matches)
        .map_err(|error| anyhow!("{}", first_line(&error)))
        .or_config()?;
    Ok(Settings {
        args,
        file: Some(path),
        matches,
    })
}

/// The matches of the subcommand in a full command line.
fn subcommand_matches(argv: Vec<OsString>) -> anyhow::Result<ArgMatches> {
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|error| anyhow!("{}", first_line(&error)))?;
    match matches.subcommand() {
        Some((_, matches)) => Ok(matches.clone()),
        None => bail!("no subcommand"),
    }
}

/// Where the subcommand's name is in `argv`: the first argument naming
/// `serve` or `check-config` (no value of a global flag can).
fn subcommand_position(argv: &[OsString]) -> anyhow::Result<usize> {
    argv.iter()
        .skip(1)
        .position(|arg| arg == "serve" || arg == "check-config")
        .map(|i| i + 1)
        .context("the command line names neither serve nor check-config")
}

/// The command line arguments of a configuration file's settings.
fn arguments(path: &Path) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| {
        format!(
            "{} is not valid TOML (lines like `tcp = \"0.0.0.0:7878\"`, `anomaly = true`, \
             `recording = [\"a.lcr\", \"b.lcr\"]`)",
            path.display()
        )
    })?;
    let command = serve_command();
    let mut arguments = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let bad = |problem: String| anyhow!("{}: key `{key}`: {problem}", path.display());
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| {
                bad(if long == "config" {
                    "a configuration file cannot name another; remove the key".into()
                } else {
                    "no such setting; a key is the long name of a flag of `latentcam-host \
                     serve --help` (max_fps for --max-fps); fix or remove it"
                        .into()
                })
            })?;
        let flag = format!("--{long}");
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
                if on {
                    arguments.push(flag.into());
                }
            }
            (ArgAction::SetTrue, other) => {
                return Err(bad(format!(
                    "{other} is not true or false; write {key} = true"
                )));
            }
            (ArgAction::Append, toml::Value::Array(values)) => {
                for value in values {
                    arguments.push(format!("{flag}={}", scalar(&value).map_err(&bad)?).into());
                }
            }
            (_, toml::Value::Array(_)) => {
                return Err(bad(format!(
                    "takes one value, not a list; write {key} = <value>"
                )));
            }
            // `--flag=value`: a value may start with a dash.
            (_, value) => {
                arguments.push(format!("{flag}={}", scalar(&value).map_err(&bad)?).into());
            }
        }
    }
    Ok(arguments)
}

/// A single value as the command line would give it.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => Err(format!(
            "{value} is not a single value (a string, number or true/false)"
        )),
    }
}

/// The `serve` subcommand as clap defines it.
fn serve_command() -> clap::Command {
    Cli::command()
        .find_subcommand("serve")
        .expect("serve is a subcommand")
        .clone()
}

/// The key of the flag a clap error is about, if any.
fn key_of(error: &clap::Error) -> Option<String> {
    let clap::error::ContextValue::String(arg) = error.get(clap::error::ContextKind::InvalidArg)?
    else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    Some(long.replace('-', "_"))
}

/// A clap error's message without its prefix and usage lines.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}
