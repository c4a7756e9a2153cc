//! The subcommands that do one thing and exit: `cameras`, `keygen`,
//! `check-config`, `encode`, `completions` and `manpage`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use latentcam_firmware::assemble::{self, AssembleError};
use latentcam_firmware::batch::{self, BatchSettings};
use latentcam_firmware::config::{EdgeConfig, SourceKind};
use latentcam_firmware::encoder;
use latentcam_firmware::manifest::Manifest;

use crate::args::ModelFlags;

/// Lists the V4L2 cameras with their formats, sizes and rates.
pub fn cameras() -> anyhow::Result<()> {
    let cameras = latentcam_firmware::source::v4l::list_cameras()?;
    if cameras.is_empty() {
        println!("no V4L2 camera found (/dev/video* absent or not capture devices)");
    }
    for camera in cameras {
        println!("{} — {}", camera.path.display(), camera.name);
        for format in camera.formats {
            let usable = if format.format.is_some() {
                ""
            } else {
                " (unsupported)"
            };
            println!("  {} {}{usable}", format.fourcc, format.description);
            for size in format.sizes {
                let rates: Vec<String> = size.fps.iter().map(|f| format!("{f:.0}")).collect();
                println!(
                    "    {}x{} @ {} fps",
                    size.width,
                    size.height,
                    rates.join("/")
                );
            }
        }
    }
    Ok(())
}

/// Creates the device key at `out` and prints its public half.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    let public = latentcam_firmware::link::secure::keygen(out)
        .context("creating this device's key (latentcam-edge keygen)")?;
    println!("{public}");
    eprintln!(
        "wrote this device's private key to {} (mode 0600; it never leaves the device)\n\
         next: on the host, `latentcam-host keys add <DEVICE-ID> {public}`;\n\
         here, [link] key_file = \"{}\" and host_key = \"<the host's public key>\"",
        out.display(),
        out.display()
    );
    Ok(())
}

/// Validates a configuration file and the model it names, and prints
/// the effective configuration.
pub fn check_config(config: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = config
        .map(Path::to_path_buf)
        .or_else(crate::args::default_config)
    else {
        bail!(
            "no configuration to check: {} does not exist; name one with --config FILE",
            crate::args::DEFAULT_CONFIG
        );
    };
    let config = EdgeConfig::load(&path)?;
    if config.source.kind == SourceKind::V4l {
        latentcam_firmware::source::v4l::check_compiled(&config.source.path)
            .map_err(AssembleError::Source)?;
    }
    let models = assemble::models_dir(&config);
    let manifest = Manifest::load(&models)
        .with_context(|| format!("model manifest in {}", models.display()))?;
    let (_, chosen) = assemble::encoder_options(&config, &manifest);
    let entry = manifest.encoder(chosen.backend.format(), chosen.precision.name())?;
    let path = encoder::locate(&manifest, entry).unwrap_or_else(|| manifest.resolve(entry));
    manifest.verify_at(entry, path.clone())?;
    print!("{}", config.to_toml());
    println!(
        "# ok: model {} ({} {}; {}) at {} matches its SHA-256",
        manifest.model_id,
        chosen.backend,
        chosen.precision.name(),
        chosen.reason,
        path.display()
    );
    Ok(())
}

/// Encodes images into a recording.
pub fn encode(
    images: &[PathBuf],
    out: &Path,
    model: &ModelFlags,
    device_id: String,
) -> anyhow::Result<()> {
    let mut flags = toml::Table::new();
    flags.insert("model".into(), toml::Value::try_from(model)?);
    let config = EdgeConfig::load_with(None, flags)?;
    let (manifest, mut encoder, mut preprocessor, chosen) =
        assemble::open_model(&config).context("loading the encoder")?;
    let images = latentcam_firmware::picture::expand_inputs(images)?;
    if images.is_empty() {
        bail!("no JPEG or PNG images found in the given paths");
    }
    // Written beside `out` and renamed at the end, so a failed run leaves
    // an earlier recording at `out` as it was.
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let settings = BatchSettings {
        device_id,
        codec: config.model.codec.into(),
        preprocessing_id: manifest.preprocessing.id.clone(),
    };
    let written = batch::encode_images(
        &images,
        encoder.as_mut(),
        &mut preprocessor,
        &settings,
        &mut BufWriter::new(file),
    )
    .with_context(|| format!("writing {}", out.display()));
    if let Ok(report) = &written {
        for (path, reason) in &report.skipped {
            eprintln!("skipped {}: {reason}", path.display());
        }
    }
    let report = match written {
        Ok(report) if report.encoded > 0 => report,
        failed => {
            let _ = std::fs::remove_file(&partial);
            failed?;
            bail!(
                "none of the {} images could be encoded (see the lines above); {} not written",
                images.len(),
                out.display()
            );
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    let n = report.encoded.max(1) as f64;
    println!(
        "{}: {} latents ({} skipped), {:.0} bytes/frame, preprocess {:.1} ms/frame, {} {} {:.1} ms/frame",
        out.display(),
        report.encoded,
        report.skipped.len(),
        report.latent_frame_bytes as f64 / n,
        report.preprocess_seconds * 1e3 / n,
        chosen.backend,
        chosen.precision.name(),
        report.encode_seconds * 1e3 / n,
    );
    Ok(())
}

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: latentcam_cli::Shell) -> anyhow::Result<()> {
    latentcam_cli::completions::<crate::args::Cli>(shell, "latentcam-edge", &mut std::io::stdout());
    Ok(())
}

/// Writes the manual page to stdout.
pub fn manpage() -> anyhow::Result<()> {
    latentcam_cli::manpage::<crate::args::Cli>(&mut std::io::stdout())
        .context("writing the manual page")
}
