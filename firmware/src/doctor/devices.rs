//! The frame source (camera or replay input), device files (serial port,
//! GPIO chip) and the device's private key.

use std::io::ErrorKind;
use std::path::Path;

use latentcam_secure::{KeyError, StaticKey};

use crate::config::{EdgeConfig, LinkAuth, SourceKind};

use super::{Check, on_path};

pub(super) fn check_source(config: &EdgeConfig) -> Check {
    let path = &config.source.path;
    match config.source.kind {
        SourceKind::V4l => check_camera(path),
        SourceKind::Replay => {
            if !path.exists() {
                return Check::fail(
                    "source",
                    format!("replay input {} does not exist", path.display()),
                    "check [source] path",
                );
            }
            if path.is_file() && !on_path("ffprobe") {
                return Check::fail(
                    "source",
                    format!(
                        "{} is a video, but ffmpeg/ffprobe are not on PATH",
                        path.display()
                    ),
                    "install ffmpeg (apt install ffmpeg)",
                );
            }
            Check::ok("source", format!("replay of {}", path.display()))
        }
        SourceKind::Synthetic => Check::ok("source", "synthetic test pattern"),
    }
}

fn check_camera(path: &Path) -> Check {
    let present: Vec<String> = std::fs::read_dir("/dev")
        .map(|d| {
            let mut v: Vec<String> = d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("video"))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    if !path.exists() {
        let seen = if present.is_empty() {
            "no /dev/video* at all".to_owned()
        } else {
            format!("present: {}", present.join(", "))
        };
        return Check::fail(
            "camera",
            format!("{} does not exist ({seen})", path.display()),
            "plug the camera in (Pi camera: enable it with raspi-config / camera_auto_detect=1), then set [source] path",
        );
    }
    if let Err(check) = open_rw("camera", path, "video") {
        return check;
    }
    match crate::source::v4l::list_cameras() {
        Ok(cameras) => match cameras.iter().find(|c| c.path == path) {
            Some(camera) => {
                let formats: Vec<String> = camera
                    .formats
                    .iter()
                    .map(|f| {
                        let usable = if f.format.is_some() {
                            ""
                        } else {
                            " (unsupported)"
                        };
                        format!("{}{usable}", f.fourcc)
                    })
                    .collect();
                if camera.formats.iter().any(|f| f.format.is_some()) {
                    Check::ok(
                        "camera",
                        format!(
                            "{} — {}: {}",
                            path.display(),
                            camera.name,
                            formats.join(", ")
                        ),
                    )
                } else {
                    Check::fail(
                        "camera",
                        format!(
                            "{} offers no format latentcam reads: {}",
                            path.display(),
                            formats.join(", ")
                        ),
                        "use a camera or device node that offers YUYV, RGB3 or MJPG",
                    )
                }
            }
            None => Check::fail(
                "camera",
                format!("{} is not a video capture device", path.display()),
                "pick the capture node (latentcam-edge cameras lists them)",
            ),
        },
        Err(e) => Check::fail(
            "camera",
            e.to_string(),
            "this build has no V4L2 support: use a package built with --features v4l",
        ),
    }
}

/// Opens a device file for reading and writing, explaining a refusal.
fn open_rw(name: &'static str, path: &Path, group: &str) -> Result<(), Check> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(Check::fail(
            name,
            format!("{}: permission denied", path.display()),
            format!(
                "add the service user to the {group} group (sudo usermod -aG {group} $USER), then log in again"
            ),
        )),
        Err(e) => Err(Check::fail(
            name,
            format!("{}: {e}", path.display()),
            "check that the device is plugged in and the path is right",
        )),
    }
}

pub(super) fn check_device_file(
    name: &'static str,
    path: &Path,
    group: &str,
    fix_missing: &str,
) -> Check {
    if !path.exists() {
        return Check::fail(
            name,
            format!("{} does not exist", path.display()),
            fix_missing,
        );
    }
    match open_rw(name, path, group) {
        Ok(()) => Check::ok(
            name,
            format!("{} opens for reading and writing", path.display()),
        ),
        Err(check) => check,
    }
}

/// Loads the device key named by `[link] key_file`.
pub(super) fn check_device_key(auth: &LinkAuth) -> (Check, Option<StaticKey>) {
    match StaticKey::load(&auth.key_file) {
        Ok(key) => (
            Check::ok(
                "keys",
                format!(
                    "device key {} (public {}); the host must hold {}",
                    auth.key_file.display(),
                    key.public(),
                    auth.host_key
                ),
            ),
            Some(key),
        ),
        Err(e) => {
            let fix = match &e {
                KeyError::Permissions { path, .. } => format!(
                    "chmod 600 {0}; chown it to the service user (chown latentcam: {0})",
                    path.display()
                ),
                KeyError::Io { source, .. } if source.kind() == ErrorKind::PermissionDenied => {
                    format!(
                        "chown the key to the service user: chown latentcam: {}",
                        auth.key_file.display()
                    )
                }
                _ => format!(
                    "latentcam-edge keygen --out {} prints the public key to register on the \
                     host (latentcam-host keys add DEVICE-ID PUBLIC-KEY)",
                    auth.key_file.display()
                ),
            };
            (Check::fail("keys", e.to_string(), fix), None)
        }
    }
}
