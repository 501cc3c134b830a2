//! `estuary config`: check a configuration file as the role that reads it would, before a
//! restart or a reload meets it, and print each role's documented example.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate FILE fully: its syntax and keys, and every file it names (keys, GeoIP databases,
    /// coverage zones, TLS material, password files) read and checked. Says which role the file
    /// is for; exits non-zero naming the file, and the line or key, of the first error.
    Check {
        /// The configuration file.
        file: PathBuf,
        /// The role the file is for, when its keys alone do not say (a file of defaults only).
        #[arg(long, value_enum)]
        role: Option<RoleName>,
    },
    /// Print a role's example configuration: every key, commented, with its default.
    Example {
        #[arg(value_enum)]
        role: RoleName,
    },
}

/// The roles that read a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleName {
    Edge,
    Packager,
    Control,
    Ingest,
}

impl RoleName {
    const ALL: [RoleName; 4] = [
        RoleName::Edge,
        RoleName::Packager,
        RoleName::Control,
        RoleName::Ingest,
    ];

    fn name(self) -> &'static str {
        match self {
            RoleName::Edge => "edge",
            RoleName::Packager => "packager",
            RoleName::Control => "control",
            RoleName::Ingest => "ingest",
        }
    }

    /// The example shipped in `deploy/`, built into the binary so that it is always at hand.
    fn example(self) -> &'static str {
        match self {
            RoleName::Edge => include_str!("../../deploy/edge.toml"),
            RoleName::Packager => include_str!("../../deploy/packager.toml"),
            RoleName::Control => include_str!("../../deploy/control.toml"),
            RoleName::Ingest => include_str!("../../deploy/ingest.toml"),
        }
    }

    /// Whether `path` reads as this role's file: its syntax and its keys, nothing it names.
    fn parse(self, path: &Path) -> anyhow::Result<()> {
        match self {
            RoleName::Edge => drop(estuary_edge::config::EdgeFile::load(path)?),
            RoleName::Packager => drop(estuary_packager::Config::load(path)?),
            RoleName::Control => drop(estuary_control::Config::load(path)?),
            RoleName::Ingest => drop(estuary_ingest::config::ConfigFile::load(path)?),
        }
        Ok(())
    }

    /// Everything the role checks when it starts with this file, short of binding its ports.
    fn validate(self, path: &Path) -> anyhow::Result<String> {
        match self {
            RoleName::Edge => {
                let config = estuary_edge::config::EdgeFile::load(path)?.resolve()?;
                Ok(format!(
                    "listens on {}, {} upstream(s)",
                    config.listen,
                    config.upstreams.len()
                ))
            }
            RoleName::Packager => {
                let settings = estuary_packager::Config::load(path)?.resolve()?;
                Ok(format!("listens on {}", settings.listen))
            }
            RoleName::Control => {
                let config = estuary_control::Config::load(path)?;
                estuary_control::Control::new(&config)?;
                Ok(format!("{} site(s)", config.sites.len()))
            }
            RoleName::Ingest => {
                let file = estuary_ingest::config::ConfigFile::load(path)?;
                if file.channels.is_empty() {
                    bail!("no [[channel]] table");
                }
                for channel in &file.channels {
                    channel.validate()?;
                }
                Ok(format!("{} channel(s)", file.channels.len()))
            }
        }
    }
}

pub(crate) fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Example { role } => {
            print!("{}", role.example());
            Ok(())
        }
        ConfigCommand::Check { file, role } => {
            let role = match role {
                Some(role) => role,
                None => role_of(&file)?,
            };
            let summary = role.validate(&file).with_context(|| {
                format!("{} as the {} role's file", file.display(), role.name())
            })?;
            println!(
                "{}: a valid {} configuration ({summary})",
                file.display(),
                role.name()
            );
            Ok(())
        }
    }
}

/// The one role whose keys the file has. A file every role reads (defaults only) is named by
/// its file name (`edge.toml`, `lon-edge.toml`) or `--role`.
fn role_of(file: &Path) -> anyhow::Result<RoleName> {
    std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut readers = Vec::new();
    let mut refusals = Vec::new();
    for role in RoleName::ALL {
        match role.parse(file) {
            Ok(()) => readers.push(role),
            Err(error) => refusals.push((role, error)),
        }
    }
    let stem = file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let named = RoleName::ALL
        .into_iter()
        .find(|role| stem.contains(role.name()));
    match (readers.as_slice(), named) {
        ([role], _) => Ok(*role),
        ([], Some(role)) => Ok(role),
        (readers, Some(role)) if readers.contains(&role) => Ok(role),
        ([], None) => {
            let mut message = format!("{} is no role's configuration:", file.display());
            for (role, error) in refusals {
                message.push_str(&format!("\n  as {}: {error:#}", role.name()));
            }
            bail!(message)
        }
        (readers, _) => bail!(
            "{} reads as the file of {}: say which with --role",
            file.display(),
            readers
                .iter()
                .map(|role| role.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
