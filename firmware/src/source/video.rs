//! Replay of a video file, decoded by an `ffmpeg` subprocess.
//!
//! `ffprobe` gives the size and frame rate, then
//! `ffmpeg -v error -i FILE -f rawvideo -pix_fmt rgb24 -` streams packed RGB
//! frames that are read straight into the caller's [`Frame`]. ffmpeg and
//! ffprobe are runtime requirements of video replay (Debian package
//! `ffmpeg`); without them opening fails with a message that says so.
//!
//! The file is checked before every frame: if it is gone (moved, deleted,
//! an unmounted USB stick) the decoder is stopped and the source reports
//! [`SourceError::Disappeared`]; `reopen` succeeds once it is back and
//! resumes at the same position.

use std::io::{ErrorKind as IoErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{Frame, FrameSource, Pace, Pacer, ReplayOptions, SourceError, SourceEvent, period_for};

/// Bytes of ffmpeg's stderr kept for error messages.
const STDERR_TAIL: usize = 2048;

/// What ffprobe says about a video's first video stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second (`r_frame_rate`, else `avg_frame_rate`), if known.
    pub fps: Option<f64>,
    /// Frame count from the container header, if it has one.
    pub frames: Option<u64>,
}

fn missing_tool(tool: &str, path: &Path) -> SourceError {
    SourceError::config(
        path.display(),
        format!("video replay needs `{tool}`, which is not installed or not on PATH"),
        "install ffmpeg (Debian: apt-get install ffmpeg), or replay a directory of images instead",
    )
}

fn parse_rate(text: &str) -> Option<f64> {
    let (num, den) = text.split_once('/').unwrap_or((text, "1"));
    let (num, den): (f64, f64) = (num.trim().parse().ok()?, den.trim().parse().ok()?);
    let rate = num / den;
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// Runs ffprobe on `path`.
pub fn probe_video(path: &Path) -> Result<VideoInfo, SourceError> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=width,height,r_frame_rate,avg_frame_rate,nb_frames")
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == IoErrorKind::NotFound {
                missing_tool("ffprobe", path)
            } else {
                SourceError::config(
                    path.display(),
                    format!("cannot run ffprobe: {e}"),
                    "check the ffmpeg installation",
                )
            }
        })?;
    if !path.exists() {
        return Err(SourceError::disappeared(path.display(), "no such file"));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let size = field("width")
        .and_then(|w| w.parse::<u32>().ok())
        .zip(field("height").and_then(|h| h.parse::<u32>().ok()))
        .filter(|&(w, h)| w > 0 && h > 0);
    let Some((width, height)) = size.filter(|_| output.status.success()) else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SourceError::config(
            path.display(),
            format!("ffprobe finds no video stream in it ({})", stderr.trim()),
            "give a video file ffmpeg can decode (.avi, .mp4, .mkv…) or a directory of images",
        ));
    };
    Ok(VideoInfo {
        width,
        height,
        fps: field("r_frame_rate")
            .and_then(parse_rate)
            .or_else(|| field("avg_frame_rate").and_then(parse_rate)),
        frames: field("nb_frames").and_then(|n| n.parse().ok()),
    })
}

/// A running ffmpeg decoder.
#[derive(Debug)]
struct Decoder {
    child: Child,
    stdout: ChildStdout,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Decoder {
    fn stop(mut self) {
        // Already exited is fine; kill only fails then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&tail).trim().to_string()
    }
}

/// Replays one video file.
#[derive(Debug)]
pub struct VideoSource {
    path: PathBuf,
    options: ReplayOptions,
    info: VideoInfo,
    decoder: Option<Decoder>,
    /// Frames read from the file in the current pass: where to resume.
    position: u64,
    /// False after a disappearance until `reopen` succeeds.
    present: bool,
    /// The decoder ended the pass with an error already reported as
    /// corrupt; the next call moves on to the next pass.
    pass_ended: bool,
    finished: bool,
    index: u64,
    pacer: Pacer,
}

impl VideoSource {
    /// Probes `path` with ffprobe; the decoder starts with the first frame.
    pub fn open(path: &Path, options: ReplayOptions) -> Result<Self, SourceError> {
        if !path.is_file() {
            return Err(SourceError::config(
                path.display(),
                "no such video file",
                "check the path (a directory replays its images)",
            ));
        }
        let info = probe_video(path)?;
        let period = match options.pace {
            Pace::Fps(fps) => Some(period_for(&path.display(), fps)?),
            Pace::Native => {
                let fps = info.fps.ok_or_else(|| {
                    SourceError::config(
                        path.display(),
                        "the file states no frame rate",
                        "set a frame rate for the replay, or replay as fast as possible",
                    )
                })?;
                Some(period_for(&path.display(), fps)?)
            }
            Pace::AsFastAsPossible => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            options,
            info,
            decoder: None,
            position: 0,
            present: true,
            pass_ended: false,
            finished: false,
            index: 0,
            pacer: Pacer::new(period),
        })
    }

    /// What ffprobe said about the file.
    pub fn info(&self) -> VideoInfo {
        self.info
    }

    fn spawn(&self) -> Result<Decoder, SourceError> {
        let mut command = Command::new("ffmpeg");
        command.args(["-nostdin", "-v", "error"]);
        if self.position > 0 {
            // Resume after a reopen. Input seeking with transcoding is
            // frame-accurate in ffmpeg ≥ 2.1.
            let fps = self.info.fps.unwrap_or(25.0);
            command.args(["-ss", &format!("{:.6}", self.position as f64 / fps)]);
        }
        command
            .arg("-i")
            .arg(&self.path)
            .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24"])
            // Keep ffprobe's size even if the stream changes size mid-way.
            .args(["-s", &format!("{}x{}", self.info.width, self.info.height)])
            .arg("-")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            if e.kind() == IoErrorKind::NotFound {
                missing_tool("ffmpeg", &self.path)
            } else {
                SourceError::config(
                    self.path.display(),
                    format!("cannot run ffmpeg: {e}"),
                    "check the ffmpeg installation",
                )
            }
        })?;
        let (Some(stdout), Some(mut stderr_pipe)) = (child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SourceError::config(
                self.path.display(),
                "ffmpeg started without pipes",
                "report this as a bug",
            ));
        };
        // Drain stderr so a chatty ffmpeg never blocks on a full pipe.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 512];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut chunk) {
                if let Ok(mut tail) = sink.lock() {
                    tail.extend_from_slice(&chunk[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
            }
        });
        Ok(Decoder {
            child,
            stdout,
            stderr,
        })
    }

    fn stop_decoder(&mut self) {
        if let Some(decoder) = self.decoder.take() {
            decoder.stop();
        }
    }

    fn gone(&mut self, detail: impl std::fmt::Display) -> SourceError {
        self.stop_decoder();
        self.present = false;
        SourceError::disappeared(self.path.display(), detail)
    }

    /// Reads one frame; `Ok(false)` at the end of the stream.
    fn read_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        let (width, height) = (self.info.width, self.info.height);
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(false);
        };
        let buf = frame.resize(width, height);
        let mut filled = 0;
        while filled < buf.len() {
            match decoder.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == IoErrorKind::Interrupted => {}
                Err(e) => {
                    if !self.path.exists() {
                        return Err(self.gone(e));
                    }
                    let tail = decoder.stderr_tail();
                    self.stop_decoder();
                    return Err(SourceError::corrupt(
                        self.path.display(),
                        format!("reading ffmpeg's output failed: {e} {tail}"),
                    ));
                }
            }
        }
        if filled == buf.len() {
            return Ok(true);
        }
        // End of stream: a clean exit ends the pass; a failure or a partial
        // frame is one corrupt frame, then the pass ends.
        let Some(mut decoder) = self.decoder.take() else {
            return Ok(false);
        };
        let status = decoder.child.wait();
        let tail = decoder.stderr_tail();
        if !self.path.exists() {
            return Err(self.gone("the file was removed while ffmpeg read it"));
        }
        let clean = status.as_ref().is_ok_and(|s| s.success());
        if clean && filled == 0 {
            return Ok(false);
        }
        self.pass_ended = true;
        Err(SourceError::corrupt(
            self.path.display(),
            format!(
                "ffmpeg stopped after {} frames with {filled} bytes of a partial frame ({}) {tail}",
                self.position,
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            ),
        ))
    }
}

impl Drop for VideoSource {
    fn drop(&mut self) {
        self.stop_decoder();
    }
}

impl FrameSource for VideoSource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError> {
        if !self.present {
            return Err(SourceError::disappeared(
                self.path.display(),
                "not reopened yet",
            ));
        }
        if !self.path.exists() {
            return Err(self.gone("no such file"));
        }
        // At most two passes per call: the end of one and the start of the
        // next when looping.
        for _ in 0..2 {
            if self.finished {
                return Ok(SourceEvent::End);
            }
            if self.decoder.is_none() && !self.pass_ended {
                self.decoder = Some(self.spawn()?);
            }
            let got = !std::mem::take(&mut self.pass_ended) && self.read_frame(frame)?;
            if got {
                self.position += 1;
                self.pacer.wait(frame);
                frame.index = self.index;
                self.index += 1;
                return Ok(SourceEvent::Frame);
            }
            let empty_pass = self.position == 0;
            self.stop_decoder();
            self.position = 0;
            if !self.options.looping {
                self.finished = true;
            } else if empty_pass {
                self.finished = true;
                return Err(SourceError::config(
                    self.path.display(),
                    "ffmpeg decodes no frame from it",
                    "check the file with `ffprobe`, or replay another one",
                ));
            }
        }
        Ok(SourceEvent::End)
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        self.stop_decoder();
        if !self.path.is_file() {
            return Err(SourceError::disappeared(
                self.path.display(),
                "no such file",
            ));
        }
        let info = probe_video(&self.path)?;
        if (info.width, info.height) != (self.info.width, self.info.height) {
            // A different file under the same name: start it from the top.
            self.position = 0;
        }
        self.info = info;
        self.present = true;
        Ok(())
    }

    fn describe(&self) -> String {
        let pace = match self.options.pace {
            Pace::Fps(fps) => format!("{fps} fps"),
            Pace::Native => format!("{} fps (the file's)", self.info.fps.unwrap_or(0.0)),
            Pace::AsFastAsPossible => "as fast as possible".to_string(),
        };
        format!(
            "video replay of {} ({}x{}, {pace}, {})",
            self.path.display(),
            self.info.width,
            self.info.height,
            if self.options.looping {
                "looping"
            } else {
                "once"
            }
        )
    }
}
