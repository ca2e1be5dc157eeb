//! `husk pull`, `husk import`, `husk images`, `husk rmi`: the image store's
//! commands. Each error is one line on stderr with its own exit status
//! ([`ImageError::exit_code`]); the last line on stdout of `pull` and
//! `import` is the name the image was stored under.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::escape::escape;
use crate::image::{self, reference, Image, ImageError, PullOptions, Store};

/// The image commands, flattened into husk's top level.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry into the local store.
    Pull(PullArgs),
    /// Import a `docker save` archive, an OCI image layout (directory or
    /// tar), or an App Container Image (FILE.aci, with FILE.aci.asc).
    Import(ImportArgs),
    /// List the stored images.
    Images(ImagesArgs),
    /// Remove image names from the store (their blobs go on `husk gc`).
    Rmi(RmiArgs),
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Allow plain HTTP and unverified TLS to this registry (always allowed
    /// for localhost and 127.0.0.0/8).
    #[arg(long)]
    pub insecure: bool,
    /// A docker/podman auth.json with the registry's credentials.
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
    /// Decide with this trust policy (containers-policy.json) instead of
    /// the one in force; `husk run` still checks the one in force.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The image: NAME[:TAG] or NAME@sha256:DIGEST.
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Store the image under this name instead of the archive's own (for
    /// an ACI: the name it must have).
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// Decide on an ACI with this trust policy instead of the one in force.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A docker save archive, an OCI layout directory, a tar of one, or
    /// an ACI (named *.aci).
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Names, digests or ids of the images.
    #[arg(required = true)]
    pub references: Vec<String>,
}

/// Runs one image command; returns the exit status.
pub fn run(cmd: ImageCommand) -> i32 {
    match execute(cmd) {
        Ok(status) => status,
        Err(e) => {
            super::print_error(&e);
            e.kind().exit_status()
        }
    }
}

/// Returns the exit status; errors not yet printed come back as `Err`.
fn execute(cmd: ImageCommand) -> Result<i32, ImageError> {
    let store = Store::open(&Store::default_root())?;
    match cmd {
        ImageCommand::Pull(a) => {
            let opts = PullOptions {
                insecure: a.insecure,
                credentials_file: a.creds,
                progress: !a.quiet && std::io::stderr().is_terminal(),
                policy_file: a.policy,
            };
            let img = image::pull(&store, &a.reference, &opts)?;
            out(&format!("{}\n", escape(&img.name)));
        }
        ImageCommand::Import(a) if a.path.extension().is_some_and(|e| e == "aci") => {
            let img = image::import_aci(&store, &a.path, a.tag.as_deref(), a.policy.as_deref())?;
            out(&format!("{}\n", escape(&img.name)));
        }
        ImageCommand::Import(a) if a.policy.is_some() => {
            return Err(ImageError::Usage(
                "--policy applies to an ACI (FILE.aci) only: other imports are not verified".into(),
            ))
        }
        ImageCommand::Import(a) => {
            let names: String = image::import(&store, &a.path, a.tag.as_deref())?
                .iter()
                .map(|i| format!("{}\n", escape(&i.name)))
                .collect();
            out(&names);
        }
        ImageCommand::Images(a) => {
            // A damaged image is named on stderr and left out; the rest
            // are listed (`husk check --repair` untags it).
            let mut images = Vec::new();
            for (name, image) in store.list_each()? {
                match image {
                    Ok(image) => images.push(image),
                    Err(e) => eprintln!(
                        "husk: warning: image {} skipped: {} (husk check --repair untags it)",
                        escape(&name),
                        crate::report::error_line(&e)
                    ),
                }
            }
            if a.json {
                let text = serde_json::to_string_pretty(&images)
                    .map_err(|e| ImageError::Malformed(format!("cannot encode: {e}")))?;
                out(&format!("{text}\n"));
            } else {
                out(&table(&images, now()));
            }
        }
        ImageCommand::Rmi(a) => {
            // Every reference is tried; the first failure's status wins.
            let mut status = 0;
            for r in &a.references {
                match store.remove(r) {
                    Ok(names) => names
                        .iter()
                        .for_each(|n| out(&format!("Untagged: {}\n", escape(n)))),
                    Err(e) => {
                        super::print_error(&e);
                        if status == 0 {
                            status = e.kind().exit_status();
                        }
                    }
                }
            }
            return Ok(status);
        }
    }
    Ok(0)
}

/// Writes to stdout; a closed pipe (`husk images | head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The `husk images` table: NAME, ID, SIZE, CREATED, like `docker images`.
fn table(images: &[Image], now: i64) -> String {
    let rows: Vec<[String; 4]> = images
        .iter()
        .map(|i| {
            [
                if i.name.starts_with("sha256:") {
                    "<none>".to_string()
                } else {
                    escape(reference::familiar(&i.name)).into_owned()
                },
                i.short_id().to_string(),
                human_size(i.size),
                i.created
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .map_or_else(|| "N/A".to_string(), |t| ago(now - t)),
            ]
        })
        .collect();
    let head = ["NAME", "ID", "SIZE", "CREATED"].map(String::from);
    let width = |c: usize| {
        rows.iter()
            .chain(std::iter::once(&head))
            .map(|r| r[c].len())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    std::iter::once(&head)
        .chain(&rows)
        .map(|r| format!("{:w0$}   {:w1$}   {:>w2$}   {}\n", r[0], r[1], r[2], r[3]))
        .collect()
}

/// Sizes as docker shows them (SI units).
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[u]
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS…` (UTC; fractions and
/// zone suffixes other than Z are ignored, which is fine for "3 days ago").
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// "3 days ago", as docker says it.
fn ago(secs: i64) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        s if s < 60 => "Less than a minute ago".into(),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 86_400 => plural(s / 3600, "hour"),
        s if s < 86_400 * 14 => plural(s / 86_400, "day"),
        s if s < 86_400 * 60 => plural(s / (86_400 * 7), "week"),
        s if s < 86_400 * 730 => plural(s / (86_400 * 30), "month"),
        s => plural(s / (86_400 * 365), "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.261MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.123Z"),
            Some(1_704_164_645)
        );
        assert_eq!(parse_rfc3339("junk"), None);
        assert_eq!(ago(30), "Less than a minute ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(3600), "1 hour ago");
    }
}
