//! Frame sources without hardware: a real recorded video (OpenCV's
//! `vtest.avi`, Debian package `opencv-doc`) decoded by ffmpeg, the fixture
//! photos, a corrupt image, files moved away and back, the test pattern,
//! and the pure parts of the V4L2 source.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latentcam_firmware::source::v4l::{
    CameraRequest, FormatOffer, PixelFormat, SizeOffer, V4lSource, negotiate, yuyv_to_rgb,
};
use latentcam_firmware::source::{
    Backoff, ErrorKind, Frame, FrameSource, ImageDirSource, Pace, ReopenNotice, Reopening,
    ReplayOptions, SourceError, SourceEvent, SyntheticOptions, SyntheticSource, VideoSource,
    open_replay, probe_video,
};

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

fn vtest() -> PathBuf {
    let path = PathBuf::from(VTEST);
    assert!(
        path.is_file(),
        "{VTEST} is missing: apt-get install opencv-doc (scripts/setup.sh does)"
    );
    path
}

fn originals() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/efficientnet-lite0/fixtures/originals")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("sources", name)
}

fn fast(looping: bool) -> ReplayOptions {
    ReplayOptions {
        pace: Pace::AsFastAsPossible,
        looping,
    }
}

/// ffprobe's own count of decoded frames, size and rate, independent of
/// the source's probing.
fn ffprobe_counted(path: &Path) -> (u64, u32, u32, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,width,height,r_frame_rate",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs (apt-get install ffmpeg)");
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap()
            .to_string()
    };
    (
        get("nb_read_frames").parse().unwrap(),
        get("width").parse().unwrap(),
        get("height").parse().unwrap(),
        get("r_frame_rate"),
    )
}

#[test]
fn video_replay_matches_ffprobe_and_loops() {
    let path = vtest();
    let (count, width, height, rate) = ffprobe_counted(&path);
    let info = probe_video(&path).unwrap();
    assert_eq!((info.width, info.height), (width, height));
    let (num, den) = rate.split_once('/').unwrap();
    let fps = num.parse::<f64>().unwrap() / den.parse::<f64>().unwrap();
    assert_eq!(info.fps, Some(fps));

    let mut source = VideoSource::open(&path, fast(true)).unwrap();
    let mut frame = Frame::new();
    let mut first = Vec::new();
    let mut distinct = 0;
    let mut previous = Vec::new();
    let mut last_us = None;
    for i in 0..count + 2 {
        assert_eq!(source.next_frame(&mut frame).unwrap(), SourceEvent::Frame);
        assert_eq!((frame.width, frame.height, frame.index), (width, height, i));
        assert_eq!(frame.rgb.len(), (width * height * 3) as usize);
        assert!(last_us < Some(frame.capture_us), "capture_us increases");
        last_us = Some(frame.capture_us);
        if i == 0 {
            first = frame.rgb.clone();
        }
        if i < count && frame.rgb != previous {
            distinct += 1;
        }
        if i == count {
            assert_eq!(frame.rgb, first, "the second pass starts with frame 0");
        }
        previous.clone_from(&frame.rgb);
    }
    assert!(
        distinct > count / 2,
        "{distinct} distinct frames of {count}"
    );

    // Once: exactly `count` frames, then End for good.
    let mut once = VideoSource::open(&path, fast(false)).unwrap();
    let mut frames = 0;
    while once.next_frame(&mut frame).unwrap() == SourceEvent::Frame {
        frames += 1;
    }
    assert_eq!(frames, count);
    assert_eq!(once.next_frame(&mut frame).unwrap(), SourceEvent::End);
}

#[test]
fn video_replay_paces_at_a_set_rate() {
    let fps = 100.0;
    let options = ReplayOptions {
        pace: Pace::Fps(fps),
        looping: false,
    };
    let mut source = VideoSource::open(&vtest(), options).unwrap();
    assert!(
        source.describe().contains("100 fps"),
        "{}",
        source.describe()
    );
    let mut frame = Frame::new();
    let mut stamps = Vec::new();
    for _ in 0..6 {
        source.next_frame(&mut frame).unwrap();
        stamps.push(frame.capture_us);
    }
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    // Not a timing threshold: the pacer sleeps until each deadline, and a
    // sleep never ends early, so five periods cannot take less than four.
    let period_us = (1e6 / fps) as u64;
    assert!(stamps[5] - stamps[0] >= 4 * period_us, "{stamps:?}");

    // The file's own rate is the default.
    let native = VideoSource::open(&vtest(), ReplayOptions::default()).unwrap();
    assert!(
        native.describe().contains("10 fps"),
        "{}",
        native.describe()
    );
}

#[test]
fn image_directory_skips_a_corrupt_file_and_goes_on() {
    let dir = scratch("corrupt");
    for name in ["HappyFish.jpg", "butterfly.jpg", "squirrel_cls.jpg"] {
        std::fs::copy(originals().join(name), dir.join(name)).unwrap();
    }
    // Sorts between butterfly.jpg and squirrel_cls.jpg.
    std::fs::write(dir.join("c-corrupt.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();

    let mut source = ImageDirSource::open(&dir, fast(false)).unwrap();
    assert_eq!(source.len(), 4);
    let mut frame = Frame::new();
    let mut sizes = Vec::new();
    let mut corrupt = Vec::new();
    loop {
        match source.next_frame(&mut frame) {
            Ok(SourceEvent::Frame) => {
                assert_eq!(frame.index, sizes.len() as u64);
                assert_eq!(frame.rgb.len(), (frame.width * frame.height * 3) as usize);
                sizes.push((frame.width, frame.height));
            }
            Ok(SourceEvent::End) => break,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
                assert!(e.to_string().contains("c-corrupt.jpg"), "{e}");
                corrupt.push(e);
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(corrupt.len(), 1);
    assert_eq!(sizes.len(), 3);
    // Each frame has the size image decoding gives.
    for (name, size) in ["HappyFish.jpg", "butterfly.jpg", "squirrel_cls.jpg"]
        .iter()
        .zip(&sizes)
    {
        let image = image::open(originals().join(name)).unwrap();
        assert_eq!((image.width(), image.height()), *size);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn image_directory_loops_and_open_replay_picks_it() {
    let mut source = open_replay(&originals(), fast(true)).unwrap();
    assert!(source.describe().contains("looping"));
    let mut frame = Frame::new();
    let mut first = Vec::new();
    for i in 0..4 {
        assert_eq!(source.next_frame(&mut frame).unwrap(), SourceEvent::Frame);
        if i == 0 {
            first = frame.rgb.clone();
        }
    }
    assert_eq!(
        frame.rgb, first,
        "the fourth frame is the first photo again"
    );
    assert_eq!(frame.index, 3);
}

#[test]
fn image_directory_that_disappears_is_reopened_where_it_left_off() {
    let parent = scratch("dir-gone");
    let dir = parent.join("photos");
    let away = parent.join("photos-away");
    std::fs::create_dir(&dir).unwrap();
    for name in ["HappyFish.jpg", "butterfly.jpg", "squirrel_cls.jpg"] {
        std::fs::copy(originals().join(name), dir.join(name)).unwrap();
    }
    let mut source = ImageDirSource::open(&dir, fast(false)).unwrap();
    let mut frame = Frame::new();
    source.next_frame(&mut frame).unwrap();

    std::fs::rename(&dir, &away).unwrap();
    let error = source.next_frame(&mut frame).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Disappeared, "{error}");
    assert!(error.to_string().contains("photos"), "{error}");
    assert_eq!(source.reopen().unwrap_err().kind(), ErrorKind::Disappeared);

    std::fs::rename(&away, &dir).unwrap();
    source.reopen().unwrap();
    assert_eq!(source.next_frame(&mut frame).unwrap(), SourceEvent::Frame);
    assert_eq!(frame.index, 1);
    let butterfly = image::open(dir.join("butterfly.jpg")).unwrap();
    assert_eq!((frame.width, frame.height), butterfly_size(&butterfly));
    assert_eq!(source.next_frame(&mut frame).unwrap(), SourceEvent::Frame);
    assert_eq!(source.next_frame(&mut frame).unwrap(), SourceEvent::End);
    std::fs::remove_dir_all(&parent).unwrap();
}

fn butterfly_size(image: &image::DynamicImage) -> (u32, u32) {
    (image.width(), image.height())
}

#[test]
fn video_file_that_disappears_is_reopened_at_the_same_frame() {
    let dir = scratch("video-gone");
    let path = dir.join("clip.avi");
    let away = dir.join("clip-away.avi");
    std::fs::copy(vtest(), &path).unwrap();

    let mut reference = VideoSource::open(&path, fast(false)).unwrap();
    let mut expected = Frame::new();
    for _ in 0..4 {
        reference.next_frame(&mut expected).unwrap();
    }
    drop(reference);

    let mut source = VideoSource::open(&path, fast(false)).unwrap();
    let mut frame = Frame::new();
    for _ in 0..3 {
        source.next_frame(&mut frame).unwrap();
    }
    std::fs::rename(&path, &away).unwrap();
    let error = source.next_frame(&mut frame).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Disappeared, "{error}");
    assert!(error.to_string().contains("clip.avi"), "{error}");
    assert_eq!(source.reopen().unwrap_err().kind(), ErrorKind::Disappeared);

    std::fs::rename(&away, &path).unwrap();
    source.reopen().unwrap();
    assert_eq!(source.next_frame(&mut frame).unwrap(), SourceEvent::Frame);
    assert_eq!(frame.index, 3);
    assert!(frame.rgb == expected.rgb, "resumes with the fourth frame");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reopening_retries_with_backoff_and_reports() {
    let parent = scratch("reopening");
    let dir = parent.join("photos");
    let away = parent.join("photos-away");
    std::fs::create_dir(&dir).unwrap();
    for name in ["HappyFish.jpg", "butterfly.jpg"] {
        std::fs::copy(originals().join(name), dir.join(name)).unwrap();
    }
    let inner = ImageDirSource::open(&dir, fast(false)).unwrap();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&notices);
    let (from, to) = (away.clone(), dir.clone());
    let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4)).with_jitter(0.0);
    // The observer puts the directory back after the second failed
    // attempt, so the sequence of events is fixed without any timing.
    let mut source = Reopening::new(inner, backoff.clone(), Some(10), move |notice| {
        let line = match notice {
            ReopenNotice::Lost { error } => format!("lost: {:?}", error.kind()),
            ReopenNotice::Failed {
                attempt, retry_in, ..
            } => {
                if *attempt == 2 {
                    std::fs::rename(&from, &to).unwrap();
                }
                format!("failed {attempt} retry in {}ms", retry_in.as_millis())
            }
            ReopenNotice::Recovered { attempts } => format!("recovered after {attempts}"),
            _ => "other".to_string(),
        };
        log.lock().unwrap().push(line);
    });
    let mut frame = Frame::new();
    source.next_frame(&mut frame).unwrap();
    std::fs::rename(&dir, &away).unwrap();
    assert_eq!(source.next_frame(&mut frame).unwrap(), SourceEvent::Frame);
    assert_eq!(frame.index, 1);
    assert_eq!(source.reopens(), 1);
    assert_eq!(
        *notices.lock().unwrap(),
        [
            "lost: Disappeared".to_string(),
            "failed 1 retry in 1ms".to_string(),
            "failed 2 retry in 2ms".to_string(),
            "recovered after 3".to_string(),
        ]
    );

    // Gone for good: the last error comes back after max_attempts.
    std::fs::rename(&dir, &away).unwrap();
    let inner = ImageDirSource::open(&away, fast(false)).unwrap();
    std::fs::rename(&away, &dir).unwrap();
    let mut source = Reopening::new(inner, backoff, Some(2), |_| {});
    let error = source.next_frame(&mut frame).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Disappeared);
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn bad_replay_paths_are_config_errors_that_say_what_to_do() {
    let dir = scratch("bad-paths");
    let missing = dir.join("nope.mp4");
    let error = open_replay(&missing, fast(false)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Fatal);
    assert!(error.to_string().contains("nope.mp4"), "{error}");

    let not_video = dir.join("text.mp4");
    std::fs::write(&not_video, b"this is not a video").unwrap();
    let error = VideoSource::open(&not_video, fast(false)).unwrap_err();
    assert!(matches!(error, SourceError::Config { .. }), "{error}");
    assert!(error.to_string().contains("text.mp4"), "{error}");

    let error = ImageDirSource::open(&dir, fast(false)).unwrap_err();
    assert!(error.to_string().contains("no .jpg"), "{error}");

    let options = ReplayOptions {
        pace: Pace::Fps(0.0),
        looping: false,
    };
    let error = VideoSource::open(&vtest(), options).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Fatal, "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synthetic_frames_are_deterministic_and_sized() {
    let options = SyntheticOptions {
        width: 320,
        height: 240,
        fps: None,
    };
    let mut a = SyntheticSource::new(options).unwrap();
    let mut b = SyntheticSource::new(options).unwrap();
    let (mut fa, mut fb) = (Frame::new(), Frame::new());
    let mut previous = Vec::new();
    for i in 0..10 {
        a.next_frame(&mut fa).unwrap();
        b.next_frame(&mut fb).unwrap();
        assert_eq!((fa.width, fa.height, fa.index), (320, 240, i));
        assert_eq!(fa.rgb.len(), 320 * 240 * 3);
        assert_eq!(fa.rgb, fb.rgb);
        assert_ne!(fa.rgb, previous, "the square moves");
        previous.clone_from(&fa.rgb);
    }
    // Bottom row: white bar on the left, blue bar on the right.
    let px = |x: usize, y: usize| &fa.rgb[(y * 320 + x) * 3..][..3];
    assert_eq!(px(0, 239), [191, 191, 191]);
    assert_eq!(px(319, 239), [0, 0, 191]);

    let error = SyntheticSource::new(SyntheticOptions {
        width: 0,
        ..options
    })
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Fatal);
}

#[test]
fn synthetic_paced_stamps_increase() {
    let mut source = SyntheticSource::new(SyntheticOptions {
        width: 64,
        height: 48,
        fps: Some(500.0),
    })
    .unwrap();
    let mut frame = Frame::new();
    let mut stamps = Vec::new();
    for _ in 0..5 {
        source.next_frame(&mut frame).unwrap();
        stamps.push(frame.capture_us);
    }
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
}

/// BT.601 limited range in floating point, the reference for the
/// integer conversion.
fn bt601(y: u8, u: u8, v: u8) -> [f64; 3] {
    let (c, d, e) = (
        f64::from(y) - 16.0,
        f64::from(u) - 128.0,
        f64::from(v) - 128.0,
    );
    [
        1.164 * c + 1.596 * e,
        1.164 * c - 0.392 * d - 0.813 * e,
        1.164 * c + 2.017 * d,
    ]
    .map(|x| x.clamp(0.0, 255.0))
}

#[test]
fn yuyv_converts_known_colours() {
    // Y U Y V for two pixels each: black, white, red, green, blue in
    // BT.601 limited range.
    let cases: [((u8, u8, u8), [u8; 3]); 5] = [
        ((16, 128, 128), [0, 0, 0]),
        ((235, 128, 128), [255, 255, 255]),
        ((81, 90, 240), [255, 0, 0]),
        ((145, 54, 34), [0, 255, 0]),
        ((41, 240, 110), [0, 0, 255]),
    ];
    for ((y, u, v), want) in cases {
        let mut rgb = [0u8; 6];
        assert!(yuyv_to_rgb(&[y, u, y, v], 2, 1, 4, &mut rgb));
        for (got, want) in rgb[..3].iter().zip(want) {
            assert!(
                got.abs_diff(want) <= 2,
                "{:?} -> {rgb:?}, want {want:?}",
                (y, u, v)
            );
        }
        assert_eq!(rgb[..3], rgb[3..]);
    }
    // Against the floating-point formula on a grid, within one level.
    for y in (0..=255u8).step_by(15) {
        for u in (0..=255u8).step_by(17) {
            for v in (0..=255u8).step_by(17) {
                let mut rgb = [0u8; 6];
                yuyv_to_rgb(&[y, u, y, v], 2, 1, 4, &mut rgb);
                for (got, want) in rgb[..3].iter().zip(bt601(y, u, v)) {
                    assert!((f64::from(*got) - want).abs() <= 1.5, "{:?}", (y, u, v));
                }
            }
        }
    }
}

#[test]
fn yuyv_honours_stride_and_rejects_short_buffers() {
    // 2x2 image, rows padded to 8 bytes: row 0 black, row 1 white.
    let yuyv = [
        16, 128, 16, 128, 9, 9, 9, 9, //
        235, 128, 235, 128, 9, 9, 9, 9,
    ];
    let mut rgb = [1u8; 12];
    assert!(yuyv_to_rgb(&yuyv, 2, 2, 8, &mut rgb));
    assert_eq!(rgb, [0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
    assert!(!yuyv_to_rgb(&yuyv[..10], 2, 2, 8, &mut rgb));
    assert!(!yuyv_to_rgb(&yuyv, 3, 1, 8, &mut rgb), "odd width");
}

fn offer(format: PixelFormat, sizes: &[(u32, u32, &[f64])]) -> FormatOffer {
    FormatOffer {
        fourcc: format.to_string(),
        description: String::new(),
        format: Some(format),
        sizes: sizes
            .iter()
            .map(|&(width, height, fps)| SizeOffer {
                width,
                height,
                fps: fps.to_vec(),
            })
            .collect(),
    }
}

#[test]
fn negotiation_prefers_size_then_rate_then_uncompressed() {
    // A typical UVC webcam: YUYV is slow at 1280x720, MJPEG is not.
    let offers = [
        offer(
            PixelFormat::Yuyv,
            &[(640, 480, &[30.0, 15.0]), (1280, 720, &[10.0, 5.0])],
        ),
        offer(
            PixelFormat::Mjpeg,
            &[(640, 480, &[30.0]), (1280, 720, &[30.0, 15.0])],
        ),
        FormatOffer {
            fourcc: "H264".into(),
            description: "H.264".into(),
            format: None,
            sizes: vec![],
        },
    ];
    let mut request = CameraRequest::new("/dev/video0");
    let n = negotiate(&offers, &request).unwrap();
    assert_eq!(
        (n.format, n.width, n.height, n.fps),
        (PixelFormat::Yuyv, 640, 480, 30.0)
    );

    request.width = 1280;
    request.height = 720;
    let n = negotiate(&offers, &request).unwrap();
    assert_eq!((n.format, n.fps), (PixelFormat::Mjpeg, 30.0));

    request.fps = 15.0;
    let n = negotiate(&offers, &request).unwrap();
    assert_eq!((n.format, n.fps), (PixelFormat::Mjpeg, 15.0));

    // Insisting on YUYV gives the best it can, at its highest rate.
    request.format = Some(PixelFormat::Yuyv);
    request.fps = 30.0;
    let n = negotiate(&offers, &request).unwrap();
    assert_eq!((n.format, n.width, n.fps), (PixelFormat::Yuyv, 1280, 10.0));

    // A size not offered: the smallest larger one.
    let request = CameraRequest {
        width: 800,
        height: 600,
        ..CameraRequest::new("/dev/video0")
    };
    let n = negotiate(&offers, &request).unwrap();
    assert_eq!((n.width, n.height), (1280, 720));

    // Nothing usable.
    let request = CameraRequest {
        format: Some(PixelFormat::Rgb3),
        ..CameraRequest::new("/dev/video0")
    };
    let error = negotiate(&offers, &request).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Fatal);
    assert!(error.to_string().contains("/dev/video0"), "{error}");
    assert!(error.to_string().contains("H264"), "{error}");
}

#[cfg(not(feature = "v4l"))]
#[test]
fn v4l_without_the_feature_says_how_to_get_it() {
    let error = V4lSource::open(&CameraRequest::new("/dev/video0")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Fatal);
    assert!(error.to_string().contains("--features v4l"), "{error}");
    assert!(error.to_string().contains("/dev/video0"), "{error}");
    let error = latentcam_firmware::source::v4l::list_cameras().unwrap_err();
    assert!(error.to_string().contains("--features v4l"), "{error}");
}

#[cfg(feature = "v4l")]
#[test]
fn v4l_missing_device_is_reported_as_disappeared() {
    let error = V4lSource::open(&CameraRequest::new("/dev/video-latentcam-none")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Disappeared, "{error}");
    assert!(
        error.to_string().contains("/dev/video-latentcam-none"),
        "{error}"
    );
    // No cameras here, and listing them must not fail for that.
    latentcam_firmware::source::v4l::list_cameras().unwrap();
}
