//! The machine: clock, free disk for the spool, CPU temperature and (on a
//! Raspberry Pi) under-voltage and throttling.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::EdgeConfig;

use super::Check;

/// 2025-01-01: a clock before this was never set.
const CLOCK_FLOOR_UNIX: u64 = 1_735_689_600;

pub(super) fn check_clock() -> Check {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now < CLOCK_FLOOR_UNIX {
        return Check::fail(
            "clock",
            format!("system time is {now} s after 1970, before 2025: not set"),
            "enable time synchronisation (timedatectl set-ntp true); a Pi has no battery clock",
        );
    }
    match crate::clock::kernel_synchronised() {
        Some(true) => Check::ok("clock", "set and synchronised (the kernel says so)"),
        None if Path::new("/run/systemd/timesync/synchronized").exists() => {
            Check::ok("clock", "set and synchronised (systemd-timesyncd)")
        }
        Some(false) => Check::warn(
            "clock",
            "set, but the kernel says it is not synchronised to a time source",
            "capture times come from this clock and are sent marked unsynchronised: enable NTP (timedatectl set-ntp true) or chrony",
        ),
        None => Check::warn(
            "clock",
            "set, but synchronisation could not be confirmed (adjtimex refused, no /run/systemd/timesync/synchronized)",
            "capture times come from this clock: enable NTP (timedatectl set-ntp true) or chrony",
        ),
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    // The fields are 32-bit on armv7, 64-bit on aarch64 and x86_64.
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

pub(super) fn check_spool_disk(config: &EdgeConfig) -> Check {
    let dir = &config.spool.dir;
    if dir.as_os_str().is_empty() {
        return Check::ok(
            "spool",
            "disabled: latents made while the link is down are lost",
        );
    }
    // The spool is created on start; measure its nearest existing ancestor.
    let mut existing: PathBuf = dir.clone();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p.to_path_buf(),
            _ => {
                existing = PathBuf::from(".");
                break;
            }
        }
    }
    let want = config.spool.max_megabytes * 1_000_000;
    match free_bytes(&existing) {
        Ok(free) if free < want => Check::fail(
            "spool",
            format!(
                "{}: {:.0} MB free, the spool may use {} MB",
                dir.display(),
                free as f64 / 1e6,
                config.spool.max_megabytes
            ),
            "free disk space or lower [spool] max_megabytes",
        ),
        Ok(free) => {
            let writable = std::fs::metadata(&existing)
                .map(|m| !m.permissions().readonly())
                .unwrap_or(false);
            if writable {
                Check::ok(
                    "spool",
                    format!(
                        "{}: {:.1} GB free for up to {} MB",
                        dir.display(),
                        free as f64 / 1e9,
                        config.spool.max_megabytes
                    ),
                )
            } else {
                Check::fail(
                    "spool",
                    format!("{} is not writable", existing.display()),
                    "give the service user the spool directory (systemd: StateDirectory=latentcam)",
                )
            }
        }
        Err(e) => Check::fail(
            "spool",
            format!("{}: {e}", existing.display()),
            "check [spool] dir",
        ),
    }
}

/// The hottest thermal zone under `root` (normally `/sys/class/thermal`).
pub(super) fn check_temperature(root: &Path) -> Check {
    let mut hottest: Option<(f64, String)> = None;
    if let Ok(zones) = std::fs::read_dir(root) {
        for zone in zones.filter_map(|z| z.ok()) {
            let milli = std::fs::read_to_string(zone.path().join("temp"))
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok());
            if let Some(milli) = milli {
                let kind = std::fs::read_to_string(zone.path().join("type"))
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_default();
                if hottest.as_ref().is_none_or(|(t, _)| milli / 1000.0 > *t) {
                    hottest = Some((milli / 1000.0, kind));
                }
            }
        }
    }
    match hottest {
        None => Check::warn(
            "temperature",
            format!("no readable thermal zone under {}", root.display()),
            "none needed on a VM; on a Pi, check that /sys/class/thermal is mounted",
        ),
        Some((c, kind)) if c >= 80.0 => Check::fail(
            "temperature",
            format!("{c:.1} °C ({kind}): the CPU throttles from 80 °C"),
            "add a heatsink or fan, or shade the enclosure",
        ),
        Some((c, kind)) if c >= 70.0 => Check::warn(
            "temperature",
            format!("{c:.1} °C ({kind}): close to throttling (80 °C)"),
            "improve cooling before summer",
        ),
        Some((c, kind)) => Check::ok("temperature", format!("{c:.1} °C ({kind})")),
    }
}

/// Decodes `vcgencmd get_throttled`'s bits.
pub fn throttled_check(bits: u32) -> Check {
    let now: Vec<&str> = [
        (0, "under-voltage"),
        (1, "ARM frequency capped"),
        (2, "throttled"),
        (3, "soft temperature limit"),
    ]
    .iter()
    .filter(|(b, _)| bits & (1 << b) != 0)
    .map(|(_, n)| *n)
    .collect();
    let since_boot = bits >> 16 & 0xf;
    if bits & 1 != 0 {
        Check::fail(
            "throttling",
            format!("now: {} (0x{bits:x})", now.join(", ")),
            "use the official power supply (Pi 4: 5.1 V 3 A; Pi 5: 5.1 V 5 A) and a short, thick cable",
        )
    } else if !now.is_empty() {
        Check::warn(
            "throttling",
            format!("now: {} (0x{bits:x})", now.join(", ")),
            "improve cooling and the power supply; inference slows while throttled",
        )
    } else if since_boot != 0 {
        Check::warn(
            "throttling",
            format!("not now, but since boot (0x{bits:x})"),
            "under-voltage or heat happened earlier: check the supply and cooling",
        )
    } else {
        Check::ok(
            "throttling",
            "none now or since boot (vcgencmd get_throttled = 0x0)",
        )
    }
}

pub(super) fn check_throttling() -> Check {
    let output = std::process::Command::new("vcgencmd")
        .arg("get_throttled")
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match text
                .trim()
                .strip_prefix("throttled=0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
            {
                Some(bits) => throttled_check(bits),
                None => Check::warn(
                    "throttling",
                    format!("unexpected vcgencmd answer {:?}", text.trim()),
                    "run vcgencmd get_throttled by hand",
                ),
            }
        }
        _ => Check::ok(
            "throttling",
            "no Raspberry Pi firmware interface (vcgencmd): nothing to check",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Level;

    #[test]
    fn throttled_bits_are_explained() {
        assert_eq!(throttled_check(0).level, Level::Ok);
        let under = throttled_check(0x50005);
        assert_eq!(under.level, Level::Fail);
        assert!(under.detail.contains("under-voltage") && under.detail.contains("throttled"));
        assert_eq!(throttled_check(0x50000).level, Level::Warn);
        assert_eq!(throttled_check(0x8).level, Level::Warn);
    }

    #[test]
    fn temperature_from_thermal_zones() {
        let root = std::env::temp_dir().join(format!("latentcam-thermal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (zone, temp) in [("thermal_zone0", "45123"), ("thermal_zone1", "81000")] {
            std::fs::create_dir_all(root.join(zone)).unwrap();
            std::fs::write(root.join(zone).join("temp"), temp).unwrap();
            std::fs::write(root.join(zone).join("type"), "cpu-thermal").unwrap();
        }
        let hot = check_temperature(&root);
        assert_eq!(hot.level, Level::Fail);
        assert!(hot.detail.starts_with("81.0 °C"), "{}", hot.detail);
        std::fs::write(root.join("thermal_zone1/temp"), "30000").unwrap();
        let fine = check_temperature(&root);
        assert_eq!(
            (fine.level, fine.detail.as_str()),
            (Level::Ok, "45.1 °C (cpu-thermal)")
        );
        assert_eq!(check_temperature(&root.join("absent")).level, Level::Warn);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn free_space_of_a_real_filesystem() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert!(free_bytes(Path::new("/definitely/absent")).is_err());
    }
}
