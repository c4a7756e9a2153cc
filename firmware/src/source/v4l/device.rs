//! The V4L2 device code (feature `v4l`).

use std::path::Path;

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, Format, FourCC, Fraction};

use super::{
    CameraInfo, CameraRequest, FormatOffer, Negotiated, PixelFormat, SizeOffer, device_error,
    negotiate, rgb3_to_rgb, yuyv_to_rgb,
};
use crate::source::{Frame, FrameSource, Pacer, SourceError, SourceEvent};

/// mmap buffers queued with the driver: enough that a slow frame does not
/// make the camera drop the next ones.
const BUFFERS: u32 = 4;

/// Milliseconds without a frame before the device counts as gone.
const DEQUEUE_TIMEOUT_MS: u64 = 5_000;

/// An open capture: the stream is declared first so it is dropped (and
/// stops streaming) before the device.
struct Capturing {
    stream: Stream<'static>,
    _device: Device,
    stride: usize,
}

/// A V4L2 camera.
pub struct V4lSource {
    request: CameraRequest,
    negotiated: Negotiated,
    capture: Option<Capturing>,
    index: u64,
    pacer: Pacer,
}

impl std::fmt::Debug for V4lSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4lSource")
            .field("request", &self.request)
            .field("negotiated", &self.negotiated)
            .field("streaming", &self.capture.is_some())
            .finish()
    }
}

fn offers(device: &Device) -> std::io::Result<Vec<FormatOffer>> {
    let mut out = Vec::new();
    for description in device.enum_formats()? {
        let fourcc = description.fourcc;
        let mut sizes = Vec::new();
        for size in device.enum_framesizes(fourcc).unwrap_or_default() {
            for discrete in size.size.to_discrete() {
                let fps = device
                    .enum_frameintervals(fourcc, discrete.width, discrete.height)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|interval| match interval.interval {
                        v4l::frameinterval::FrameIntervalEnum::Discrete(f) => fraction_fps(f),
                        v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => fraction_fps(s.min),
                    })
                    .collect();
                sizes.push(SizeOffer {
                    width: discrete.width,
                    height: discrete.height,
                    fps,
                });
            }
        }
        out.push(FormatOffer {
            fourcc: String::from_utf8_lossy(&fourcc.repr).into_owned(),
            description: description.description,
            format: PixelFormat::from_fourcc(fourcc.repr),
            sizes,
        });
    }
    Ok(out)
}

/// Frame rate of a frame interval.
fn fraction_fps(interval: Fraction) -> Option<f64> {
    (interval.numerator > 0)
        .then(|| f64::from(interval.denominator) / f64::from(interval.numerator))
}

/// Lists the V4L2 capture devices with their formats, sizes and rates.
pub fn list_cameras() -> Result<Vec<CameraInfo>, SourceError> {
    let mut cameras = Vec::new();
    for node in v4l::context::enum_devices() {
        let path = node.path().to_path_buf();
        let Ok(device) = Device::with_path(&path) else {
            continue;
        };
        let Ok(caps) = device.query_caps() else {
            continue;
        };
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            continue;
        }
        let formats = offers(&device).map_err(|e| device_error(&path, "listing formats", &e))?;
        cameras.push(CameraInfo {
            path,
            name: caps.card,
            formats,
        });
    }
    cameras.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(cameras)
}

impl V4lSource {
    /// Opens the camera and negotiates the closest mode to `request`.
    pub fn open(request: &CameraRequest) -> Result<Self, SourceError> {
        let (capture, negotiated) = start(request)?;
        Ok(Self {
            request: request.clone(),
            negotiated,
            capture: Some(capture),
            index: 0,
            pacer: Pacer::new(None),
        })
    }

    /// The mode in use.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }
}

fn start(request: &CameraRequest) -> Result<(Capturing, Negotiated), SourceError> {
    let path = request.device.as_path();
    if !path.exists() {
        return Err(SourceError::disappeared(path.display(), "no such device"));
    }
    let device = Device::with_path(path).map_err(|e| device_error(path, "opening", &e))?;
    let offered = offers(&device).map_err(|e| device_error(path, "listing formats", &e))?;
    let mode = negotiate(&offered, request)?;
    let wanted = Format::new(mode.width, mode.height, FourCC::new(&mode.format.fourcc()));
    let set = device
        .set_format(&wanted)
        .map_err(|e| device_error(path, "setting the format", &e))?;
    if set.fourcc.repr != mode.format.fourcc()
        || (set.width, set.height) != (mode.width, mode.height)
    {
        return Err(SourceError::config(
            path.display(),
            format!(
                "asked for {} {}x{}, the driver set {} {}x{}",
                mode.format,
                mode.width,
                mode.height,
                String::from_utf8_lossy(&set.fourcc.repr),
                set.width,
                set.height
            ),
            "choose a size and format from `latentcam-edge cameras`",
        ));
    }
    // Rate setting is best effort: many drivers ignore or round it.
    let interval = Fraction::new(1000, (mode.fps * 1000.0).round().max(1.0) as u32);
    let _ = device.set_params(&Parameters::new(interval));
    let mut stream = Stream::with_buffers(&device, Type::VideoCapture, BUFFERS)
        .map_err(|e| device_error(path, "mapping capture buffers", &e))?;
    stream.set_timeout(std::time::Duration::from_millis(DEQUEUE_TIMEOUT_MS));
    let stride = match mode.format {
        PixelFormat::Mjpeg => 0,
        PixelFormat::Yuyv => (set.stride as usize).max(mode.width as usize * 2),
        PixelFormat::Rgb3 => (set.stride as usize).max(mode.width as usize * 3),
    };
    Ok((
        Capturing {
            stream,
            _device: device,
            stride,
        },
        mode,
    ))
}

fn convert(
    mode: &Negotiated,
    stride: usize,
    bytes: &[u8],
    frame: &mut Frame,
    device: &Path,
) -> Result<(), SourceError> {
    let ok = match mode.format {
        PixelFormat::Mjpeg => {
            return crate::picture::decode_into(bytes, frame)
                .map_err(|detail| SourceError::corrupt(device.display(), detail));
        }
        PixelFormat::Yuyv => yuyv_to_rgb(
            bytes,
            mode.width,
            mode.height,
            stride,
            frame.resize(mode.width, mode.height),
        ),
        PixelFormat::Rgb3 => rgb3_to_rgb(
            bytes,
            mode.width,
            mode.height,
            stride,
            frame.resize(mode.width, mode.height),
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(SourceError::corrupt(
            device.display(),
            format!("short {} buffer of {} bytes", mode.format, bytes.len()),
        ))
    }
}

impl FrameSource for V4lSource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError> {
        let device = self.request.device.clone();
        let Some(capture) = self.capture.as_mut() else {
            return Err(SourceError::disappeared(
                device.display(),
                "not reopened yet",
            ));
        };
        let (bytes, meta) = match capture.stream.next() {
            Ok(next) => next,
            Err(e) => {
                let error = device_error(&device, "capturing", &e);
                let error = if e.kind() == std::io::ErrorKind::TimedOut {
                    SourceError::disappeared(device.display(), "no frame for 5 s")
                } else {
                    error
                };
                self.capture = None;
                return Err(error);
            }
        };
        let used = (meta.bytesused as usize).min(bytes.len());
        let used = if used == 0 { bytes.len() } else { used };
        convert(
            &self.negotiated,
            capture.stride,
            &bytes[..used],
            frame,
            &device,
        )?;
        self.pacer.stamp(frame);
        frame.index = self.index;
        self.index += 1;
        Ok(SourceEvent::Frame)
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        self.capture = None;
        let (capture, negotiated) = start(&self.request)?;
        self.capture = Some(capture);
        self.negotiated = negotiated;
        Ok(())
    }

    fn describe(&self) -> String {
        let n = &self.negotiated;
        format!(
            "V4L2 camera {} ({} {}x{} at {} fps)",
            self.request.device.display(),
            n.format,
            n.width,
            n.height,
            n.fps
        )
    }
}
