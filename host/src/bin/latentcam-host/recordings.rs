//! The subcommands that read recordings: `replay`, `train`, `compare`,
//! `inspect` and `classify`.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use latentcam_host::heads::imagenet::ImagenetHead;
use latentcam_host::heads::trained;
use latentcam_model::manifest::Manifest;

use crate::args::{ClassifyArgs, CompareArgs, InspectArgs, ReplayArgs, TrainArgs};
use crate::heads::{LoadedHeads, load_manifest};
use crate::progress::{Counting, Progress, Unit};

/// Runs the heads over a recording, with a progress bar on stderr.
pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let ReplayArgs {
        recording,
        jsonl,
        heads,
    } = args;
    let LoadedHeads {
        manifest, heads, ..
    } = heads.load(false)?;
    let file = File::open(&recording)
        .with_context(|| format!("cannot open recording {}", recording.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let out: Box<dyn std::io::Write + Send> = match &jsonl {
        Some(path) => Box::new(std::io::BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut progress = Progress::start(
        format!("replaying {}", recording.display()),
        total,
        Unit::Bytes,
    );
    let summary =
        latentcam_host::replay::replay(BufReader::new(file), &manifest, heads, out, |read| {
            progress.set(read)
        })
        .with_context(|| format!("replaying {}", recording.display()))?;
    drop(progress);
    eprintln!(
        "{}: {} latents through the heads, {} skipped, {} frame errors",
        recording.display(),
        summary.worker.processed,
        summary.skipped,
        summary.frame_errors
    );
    for reason in &summary.refused {
        eprintln!("{reason}");
    }
    Ok(())
}

/// Fits a linear head on a recording's latents and a labels file.
pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let TrainArgs {
        recording,
        labels,
        out,
        holdout_every,
        test_labels,
        l2,
        epochs,
        models,
    } = args;
    // The labels first: a mistake in them is found before the recording
    // is read.
    let labelled = trained::read_labels(&labels)?;
    let holdout = match &test_labels {
        Some(path) => trained::Holdout::Labels(trained::read_labels(path)?),
        None => trained::Holdout::EveryNth(holdout_every),
    };
    let manifest = load_manifest(&models)?;
    let file = File::open(&recording)
        .with_context(|| format!("cannot open recording {}", recording.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let latents = {
        let mut reading = Progress::start(
            format!("reading {}", recording.display()),
            size,
            Unit::Bytes,
        );
        trained::latents_of(BufReader::new(Counting::new(file, &mut reading)), &manifest)
            .with_context(|| format!("reading {}", recording.display()))?
    };
    let options = latentcam_host::heads::linear::FitOptions {
        epochs,
        l2: l2.unwrap_or(1e-4),
        ..Default::default()
    };
    let choose_l2 = l2.is_none();
    let mut fitting = Progress::start(
        "training the head",
        trained::train_steps(&options, choose_l2) as u64,
        Unit::Steps,
    );
    let report = trained::train_with(
        &latents,
        &labelled,
        &holdout,
        &options,
        choose_l2,
        &mut |done, _| fitting.set(done as u64),
    )?;
    drop(fitting);
    for (l2, score) in &report.validation {
        println!(
            "weight decay {l2:e}: validation top-1 {:.1}%",
            score * 100.0
        );
    }
    report.head.save(&out)?;
    println!(
        "{}: {} classes, trained on {} latents (weight decay {:e}), held-out top-1 {:.1}% on {} ({} labels not in the recording)",
        out.display(),
        report.head.labels.len(),
        report.train,
        report.l2,
        report.accuracy * 100.0,
        report.held_out,
        report.unmatched
    );
    Ok(())
}

/// Compares two recordings of the same frames latent by latent.
pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let CompareArgs {
        first,
        second,
        min_cosine,
        models,
    } = args;
    let manifest = load_manifest(&models)?;
    let read = |path: &PathBuf| -> anyhow::Result<_> {
        let file = File::open(path)
            .with_context(|| format!("cannot open recording {}", path.display()))?;
        trained::latents_of(BufReader::new(file), &manifest)
            .with_context(|| format!("reading {}", path.display()))
    };
    let (a, b) = (read(&first)?, read(&second)?);
    let imagenet =
        ImagenetHead::from_manifest(&manifest).context("loading the model's ImageNet head")?;
    let c = latentcam_host::compare::compare(&a, &b, Some(&imagenet))?;
    println!(
        "{} latents matched ({} only in the first, {} only in the second): cosine min {:.6} mean {:.6}, ImageNet top-1 agrees on {}/{}",
        c.matched,
        c.only_first,
        c.only_second,
        c.min_cosine,
        c.mean_cosine,
        c.top1_agree,
        c.matched
    );
    if c.matched == 0 || c.only_first + c.only_second > 0 || c.min_cosine < min_cosine {
        anyhow::bail!("the recordings differ (want every latent in both, cosine ≥ {min_cosine})");
    }
    Ok(())
}

/// Summarises a recording: messages, devices, sequence, frame errors.
pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let InspectArgs { recording } = args;
    let file = File::open(&recording)
        .with_context(|| format!("cannot open recording {}", recording.display()))?;
    let summary = latentcam_host::recording::summarize(BufReader::new(file))
        .with_context(|| format!("while reading {}", recording.display()))?;
    println!("{}: {} bytes", recording.display(), summary.bytes);
    for (device, model) in &summary.devices {
        println!("device {device}: {model}");
    }
    for (kind, count) in &summary.messages {
        println!("  {kind:<10} {count}");
    }
    let latents: u64 = summary.sequences.values().map(|s| s.latents).sum();
    if latents > 0 {
        println!(
            "latents: {latents}, {:.1} payload bytes/latent",
            summary.payload_bytes as f64 / latents as f64
        );
    }
    // Sequence numbers count per device: each device's on its own.
    for (device, seq) in &summary.sequences {
        let Some((first, last)) = seq.first_last else {
            continue;
        };
        let whose = match device {
            Some(device) => format!("device {device}"),
            None => "before any hello".to_owned(),
        };
        println!(
            "  {whose}: {} latents, seq {first}..={last}, {} missing, {} out of order or duplicate",
            seq.latents, seq.missing, seq.out_of_order_or_duplicate,
        );
        match seq.captured {
            Some((first, last)) => println!(
                "    captured {} to {}{}{}",
                latentcam_host::clock::iso8601_us(first),
                latentcam_host::clock::iso8601_us(last),
                match seq.unsynced {
                    0 => String::new(),
                    n => format!(", {n} on an unsynchronised clock"),
                },
                match seq.without_time {
                    0 => String::new(),
                    n => format!(", {n} without a time"),
                },
            ),
            None => println!("    capture times: none (the device sent no wall-clock time)"),
        }
    }
    if summary.errors.is_empty() {
        println!("frame errors: none");
    } else {
        for (kind, count) in &summary.errors {
            println!("frame errors: {kind} {count}");
        }
    }
    Ok(())
}

/// Prints the ImageNet top classes of every latent of a recording.
pub fn classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let ClassifyArgs {
        recording,
        models,
        top,
    } = args;
    let manifest = Manifest::load(&models).with_context(|| {
        format!(
            "loading the model manifest from {} (set --models or LATENTCAM_MODELS)",
            models.display()
        )
    })?;
    let head = ImagenetHead::from_manifest(&manifest).context("loading the ImageNet head")?;
    let file = File::open(&recording)
        .with_context(|| format!("cannot open recording {}", recording.display()))?;
    let summary = latentcam_host::classify::classify_recording(
        BufReader::new(file),
        &manifest,
        &head,
        top.max(1),
        |c| {
            let classes: Vec<String> = c
                .predictions
                .iter()
                .map(|p| format!("{} {:.0}%", p.label, p.probability * 100.0))
                .collect();
            println!(
                "{} #{:<4} {:>4}x{:<4} {}",
                c.device_id,
                c.seq,
                c.frame_size.0,
                c.frame_size.1,
                classes.join(" | ")
            );
        },
    )
    .with_context(|| format!("while reading {}", recording.display()))?;
    for (device, refusal) in &summary.refused {
        eprintln!("refused device {device}: {refusal}");
    }
    println!(
        "{} latents classified, {} without an accepted Hello, {} bad payloads, {} frame errors",
        summary.classified, summary.without_hello, summary.bad_payload, summary.frame_errors
    );
    if summary.classified == 0 && !summary.refused.is_empty() {
        anyhow::bail!("no latent could be classified: every device was refused");
    }
    Ok(())
}
