//! Edge speed: the encoder on tract (fp32, int8; TFLite when built) against
//! the runtimes a user would pick instead — onnxruntime and LiteRT, driven
//! through `bench/peers.py` — on the same model, the same input and the same
//! machine, **interleaved**: round 1 runs every configuration, then round 2,
//! and so on (the order rotates each round), so a change in machine load or
//! clock touches every configuration alike. At 1 thread and at all cores.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use latentcam_firmware::encoder::{self, Backend, Encoder, EncoderOptions, Precision};
use latentcam_firmware::manifest::{Layout, Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;
use serde::Serialize;
use serde_json::{Value, json};

/// Arguments of `latentcam-bench edge`.
#[derive(clap::Args)]
pub struct EdgeArgs {
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    models: PathBuf,
    /// The input photo (default: the recipe's butterfly fixture, the same
    /// photo `peers.py` reads).
    #[arg(long)]
    photo: Option<PathBuf>,
    /// Rounds; every configuration runs once per round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Timed inferences per configuration per round.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Thread counts (default: 1 and every core).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Python with onnxruntime and ai-edge-litert (the recipe's venv);
    /// without it only latentcam's own backends run.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The peers script.
    #[arg(long, default_value = "bench/peers.py")]
    peers: PathBuf,
    /// Where the `.tflite` encoders are (passed to peers.py).
    #[arg(long)]
    tflite_dir: Option<PathBuf>,
    /// Markdown table to write.
    #[arg(long)]
    md: Option<PathBuf>,
    /// JSON results to write.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `tract`, `tflite` (latentcam's backends), `onnxruntime`, `litert`.
    pub runtime: String,
    /// `fp32` or `int8`.
    pub precision: String,
    /// Threads asked for.
    pub threads: usize,
    /// Runtime version or build.
    pub version: String,
    /// True for the peers (the runtimes a user would pick instead).
    pub peer: bool,
    /// Seconds per inference, every timed run.
    pub seconds: Vec<f64>,
    /// Sum of the output latent: every runtime gets the same input tensor,
    /// so one precision should give nearly the same sum everywhere (a
    /// cross-check that each ran the right model on the right input).
    pub checksum: f64,
    /// Why it did not run, if it did not.
    pub unavailable: Option<String>,
}

impl Row {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// Median seconds per inference.
    pub fn median(&self) -> Option<f64> {
        let s = self.sorted();
        (!s.is_empty()).then(|| {
            let n = s.len();
            if n % 2 == 1 {
                s[n / 2]
            } else {
                (s[n / 2 - 1] + s[n / 2]) / 2.0
            }
        })
    }

    fn name(&self) -> String {
        format!("{} {}", self.runtime, self.precision)
    }
}

/// A configuration that can run `iters` timed inferences.
trait Contender {
    fn run(&mut self, iters: usize) -> Result<(Vec<f64>, f64)>;
}

struct Local {
    encoder: Box<dyn Encoder>,
    input: Vec<f32>,
    latent: Vec<f32>,
}

impl Contender for Local {
    fn run(&mut self, iters: usize) -> Result<(Vec<f64>, f64)> {
        let mut seconds = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            self.encoder.encode(&self.input, &mut self.latent)?;
            seconds.push(t.elapsed().as_secs_f64());
        }
        Ok((seconds, self.latent.iter().map(|&v| f64::from(v)).sum()))
    }
}

/// `bench/peers.py` as a child process speaking JSON lines.
struct Peers {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peers {
    fn spawn(python: &Path, script: &Path, models: &Path, tflite: Option<&Path>) -> Result<Self> {
        let mut cmd = Command::new(python);
        cmd.arg(script).arg("--models").arg(models);
        if let Some(dir) = tflite {
            cmd.arg("--tflite-dir").arg(dir);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take().context("peers stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("peers stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn call(&mut self, request: Value) -> Result<Value> {
        writeln!(self.stdin, "{request}").context("writing to peers.py")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("peers.py ended (see its stderr above)");
        }
        let reply: Value =
            serde_json::from_str(&line).with_context(|| format!("peers.py said {line:?}"))?;
        if reply["ok"] != true {
            bail!("{}", reply["error"].as_str().unwrap_or("peers.py failed"));
        }
        Ok(reply)
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

struct Remote {
    peers: std::rc::Rc<std::cell::RefCell<Peers>>,
    key: String,
}

impl Contender for Remote {
    fn run(&mut self, iters: usize) -> Result<(Vec<f64>, f64)> {
        let reply = self
            .peers
            .borrow_mut()
            .call(json!({"cmd": "run", "key": self.key, "iters": iters}))?;
        let seconds = reply["seconds"]
            .as_array()
            .context("no seconds in reply")?
            .iter()
            .map(|v| v.as_f64().context("a second that is not a number"))
            .collect::<Result<Vec<_>>>()?;
        Ok((seconds, reply["checksum"].as_f64().unwrap_or(f64::NAN)))
    }
}

fn local(
    manifest: &Manifest,
    backend: Backend,
    precision: Precision,
    threads: usize,
    image: &image::RgbImage,
) -> Result<Local> {
    let options = EncoderOptions {
        backend,
        precision,
        threads,
        ..EncoderOptions::default()
    };
    let encoder = encoder::open(manifest, &options)?;
    let mut pre = Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
    let input = pre
        .run(image.as_raw(), image.width(), image.height())
        .map_err(|e| anyhow!("preprocessing: {e}"))?
        .to_vec();
    Ok(Local {
        latent: vec![0.0; encoder.info().latent_dim],
        encoder,
        input,
    })
}

/// Runs the edge benchmark and prints the table.
pub fn run(args: &EdgeArgs) -> Result<()> {
    let manifest = Manifest::load(&args.models)
        .with_context(|| format!("loading {}", args.models.display()))?;
    let photo = args.photo.clone().unwrap_or_else(|| {
        manifest
            .root()
            .join("efficientnet-lite0/fixtures/originals/butterfly.jpg")
    });
    let image = image::open(&photo)
        .with_context(|| format!("reading {}", photo.display()))?
        .to_rgb8();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut threads = args.threads.clone();
    if threads.is_empty() {
        threads = vec![1, cores];
    }
    threads.dedup();

    // The tensor tract runs (the ONNX encoders take NCHW), handed to the
    // peers so every runtime sees the same input values; peers.py
    // transposes it for LiteRT. Equal fp32 output sums confirm it.
    let tensor_path =
        std::env::temp_dir().join(format!("latentcam-bench-{}.f32", std::process::id()));
    {
        let mut pre = Preprocessor::new(&manifest.preprocessing, Layout::Nchw);
        let input = pre
            .run(image.as_raw(), image.width(), image.height())
            .map_err(|e| anyhow!("preprocessing: {e}"))?;
        let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&tensor_path, bytes)
            .with_context(|| format!("writing {}", tensor_path.display()))?;
    }
    let peers = match &args.python {
        Some(python) => {
            let p = Peers::spawn(
                python,
                &args.peers,
                &args.models,
                args.tflite_dir.as_deref(),
            )?;
            Some(std::rc::Rc::new(std::cell::RefCell::new(p)))
        }
        None => None,
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut contenders: Vec<(usize, Box<dyn Contender>)> = Vec::new();
    for &t in &threads {
        let backends = Backend::ALL.into_iter().filter(|b| b.is_compiled());
        for backend in backends {
            for precision in [Precision::Fp32, Precision::Int8] {
                let mut row = Row {
                    runtime: backend.name().to_owned(),
                    precision: precision.name().to_owned(),
                    threads: t,
                    version: if backend == Backend::Tract {
                        "tract 0.23 (latentcam)".to_owned()
                    } else {
                        format!("{} (latentcam)", backend.name())
                    },
                    peer: false,
                    seconds: Vec::new(),
                    checksum: f64::NAN,
                    unavailable: None,
                };
                eprintln!("loading {} at {t} thread(s)", row.name());
                match local(&manifest, backend, precision, t, &image) {
                    Ok(mut c) => {
                        c.run(2)?; // warm-up
                        contenders.push((rows.len(), Box::new(c)));
                    }
                    Err(e) => row.unavailable = Some(format!("{e:#}")),
                }
                rows.push(row);
            }
        }
        if let Some(peers) = &peers {
            for runtime in ["onnxruntime", "litert"] {
                for precision in ["fp32", "int8"] {
                    eprintln!("loading {runtime} {precision} at {t} thread(s)");
                    let mut row = Row {
                        runtime: runtime.to_owned(),
                        precision: precision.to_owned(),
                        threads: t,
                        version: String::new(),
                        peer: true,
                        seconds: Vec::new(),
                        checksum: f64::NAN,
                        unavailable: None,
                    };
                    let loaded = peers.borrow_mut().call(json!({
                        "cmd": "load", "runtime": runtime, "precision": precision, "threads": t,
                        "tensor": tensor_path
                    }));
                    match loaded {
                        Ok(reply) => {
                            row.version =
                                format!("{runtime} {}", reply["version"].as_str().unwrap_or("?"));
                            let mut c = Remote {
                                peers: std::rc::Rc::clone(peers),
                                key: reply["key"].as_str().unwrap_or_default().to_owned(),
                            };
                            c.run(2)?;
                            contenders.push((rows.len(), Box::new(c)));
                        }
                        Err(e) => row.unavailable = Some(format!("{e:#}")),
                    }
                    rows.push(row);
                }
            }
        }
    }

    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        let n = contenders.len();
        for k in 0..n {
            let (row, contender) = &mut contenders[(k + round) % n];
            let (seconds, checksum) = contender.run(args.iters)?;
            rows[*row].seconds.extend(seconds);
            rows[*row].checksum = checksum;
        }
    }
    drop(contenders);
    drop(peers);
    let _ = std::fs::remove_file(&tensor_path);

    let table = markdown(&rows, cores, args);
    print!("{table}");
    if let Some(path) = &args.md {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let doc = json!({ "cores": cores, "rounds": args.rounds, "iters": args.iters,
                          "photo": photo, "rows": rows });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The table: one block per thread count, each row's ratio to the fastest
/// peer at that thread count (below 1.0: faster than every peer).
fn markdown(rows: &[Row], cores: usize, args: &EdgeArgs) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} rounds × {} inferences per configuration, interleaved; {cores} cores.\n\n",
        args.rounds, args.iters
    ));
    out.push_str(
        "| threads | runtime | precision | median ms | min ms | max ms | frames/s | × fastest peer | output sum |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut threads: Vec<usize> = rows.iter().map(|r| r.threads).collect();
    threads.dedup();
    for t in threads {
        let fastest_peer = rows
            .iter()
            .filter(|r| r.threads == t && r.peer)
            .filter_map(Row::median)
            .min_by(f64::total_cmp);
        for r in rows.iter().filter(|r| r.threads == t) {
            let runtime = if r.peer {
                r.runtime.clone()
            } else {
                format!("**{}**", r.runtime)
            };
            match (r.median(), &r.unavailable) {
                (Some(m), _) => {
                    let s = r.sorted();
                    let ratio =
                        fastest_peer.map_or_else(|| "–".to_owned(), |p| format!("{:.2}", m / p));
                    out.push_str(&format!(
                        "| {t} | {runtime} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {ratio} | {:.2} |\n",
                        r.precision,
                        m * 1e3,
                        s[0] * 1e3,
                        s[s.len() - 1] * 1e3,
                        1.0 / m,
                        r.checksum
                    ));
                }
                (None, why) => out.push_str(&format!(
                    "| {t} | {runtime} | {} | unavailable: {} | | | | | |\n",
                    r.precision,
                    why.as_deref().unwrap_or("no runs").replace('|', "/")
                )),
            }
        }
    }
    out.push_str(
        "\n× fastest peer: median latency divided by the fastest peer's (onnxruntime, \
         LiteRT) at the same thread count; below 1 is faster. Bold: latentcam's backends.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seconds: &[f64]) -> Row {
        Row {
            runtime: "x".into(),
            precision: "fp32".into(),
            threads: 1,
            version: String::new(),
            peer: false,
            seconds: seconds.to_vec(),
            checksum: 0.0,
            unavailable: None,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(row(&[3.0, 1.0, 2.0]).median(), Some(2.0));
        assert_eq!(row(&[4.0, 1.0, 2.0, 3.0]).median(), Some(2.5));
        assert_eq!(row(&[]).median(), None);
    }
}
