//! A moving test pattern for runs without a camera or a recording: seven
//! 75 % colour bars (white, yellow, cyan, green, magenta, red, blue) with a
//! white square that bounces across them. Frame `n` depends only on the
//! size and `n`, so two runs give the same pixels.

use std::time::Duration;

use super::{Frame, FrameSource, Pacer, SourceError, SourceEvent, period_for};

/// The bars, left to right.
const BARS: [[u8; 3]; 7] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
];

/// Pixels the square moves per frame along each axis.
const STEP: u64 = 4;

/// Size and rate of the pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second; `None` for as fast as possible.
    pub fps: Option<f64>,
}

impl Default for SyntheticOptions {
    /// 640×480 at 30 fps.
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: Some(30.0),
        }
    }
}

/// The test pattern source.
#[derive(Debug)]
pub struct SyntheticSource {
    options: SyntheticOptions,
    /// One row of bars, copied into every row.
    bar_row: Vec<u8>,
    index: u64,
    pacer: Pacer,
}

impl SyntheticSource {
    /// A pattern of the given size, at least 8×8 and at most 16384×16384.
    pub fn new(options: SyntheticOptions) -> Result<Self, SourceError> {
        let (w, h) = (options.width, options.height);
        if !(8..=16384).contains(&w) || !(8..=16384).contains(&h) {
            return Err(SourceError::config(
                "synthetic source",
                format!("size {w}x{h} is out of range"),
                "give a width and height between 8 and 16384",
            ));
        }
        let period: Option<Duration> = options
            .fps
            .map(|fps| period_for(&"synthetic source", fps))
            .transpose()?;
        let bar_row = (0..w)
            .flat_map(|x| BARS[(x as usize * BARS.len()) / w as usize])
            .collect();
        Ok(Self {
            options,
            bar_row,
            index: 0,
            pacer: Pacer::new(period),
        })
    }

    /// Draws frame `index` into `rgb` (`width × height × 3` bytes).
    fn draw(&self, index: u64, rgb: &mut [u8]) {
        let (w, h) = (self.options.width as usize, self.options.height as usize);
        for row in rgb.chunks_exact_mut(w * 3) {
            row.copy_from_slice(&self.bar_row);
        }
        let side = (w.min(h) / 4).max(1);
        let x = bounce(index * STEP, (w - side) as u64) as usize;
        let y = bounce(index * STEP * 3 / 4, (h - side) as u64) as usize;
        for row in rgb.chunks_exact_mut(w * 3).skip(y).take(side) {
            row[x * 3..(x + side) * 3].fill(255);
        }
    }
}

/// Position after moving `distance` back and forth over `0..=span`.
fn bounce(distance: u64, span: u64) -> u64 {
    if span == 0 {
        return 0;
    }
    let phase = distance % (2 * span);
    if phase <= span {
        phase
    } else {
        2 * span - phase
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<SourceEvent, SourceError> {
        let rgb = frame.resize(self.options.width, self.options.height);
        self.draw(self.index, rgb);
        self.pacer.wait(frame);
        frame.index = self.index;
        self.index += 1;
        Ok(SourceEvent::Frame)
    }

    fn reopen(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn describe(&self) -> String {
        let fps = self
            .options
            .fps
            .map_or_else(|| "as fast as possible".to_string(), |f| format!("{f} fps"));
        format!(
            "synthetic test pattern {}x{} at {fps}",
            self.options.width, self.options.height
        )
    }
}
