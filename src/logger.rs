//! A small logger on stderr.
//!
//! When stderr is the journal's stream (`JOURNAL_STREAM` names the device
//! and inode of stderr, as systemd sets it), each line starts with its
//! syslog priority, `<3>` to `<7>`, which journald reads to keep the
//! level, and carries no timestamp (the journal adds its own). Elsewhere a
//! line starts with a UTC timestamp and the level: also when the variable
//! was inherited by a process whose stderr goes somewhere else (a wrapper
//! writing to a file), which systemd's documentation says to check.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    journal: bool,
}

/// Installs the logger at `level`. Calling it twice keeps the first.
pub fn init(level: LevelFilter) {
    let journal = std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|v| stderr_is(&v));
    let logger: &'static Logger = Box::leak(Box::new(Logger { journal }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Whether stderr is the file `JOURNAL_STREAM` names (`DEVICE:INODE`).
fn stderr_is(journal_stream: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // The link in /proc leads to stderr's file, socket or pipe.
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The syslog priority of a level.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if self.journal {
            format!("<{}>{}\n", priority(record.level()), record.args())
        } else {
            format!("{} {:<5} {}\n", utc_now(), record.level(), record.args())
        };
        // One write per line, so lines from a panic hook never interleave
        // mid-line; a failed write to stderr has nowhere else to go.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for now.
fn utc_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(since.as_secs(), since.subsec_millis())
}

/// Formats Unix seconds as a UTC timestamp (civil-from-days, H. Hinnant).
fn format_utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_utc(1_795_737_599, 999), "2026-11-26T23:59:59.999Z");
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/fd/2").unwrap();
        assert!(stderr_is(&format!("{}:{}", m.dev(), m.ino())));
        assert!(!stderr_is(&format!("{}:{}", m.dev(), m.ino() + 1)));
        for bad in ["1:2", "", "x:y", "12", ":"] {
            assert!(!stderr_is(bad), "{bad:?}");
        }
    }

    #[test]
    fn priorities() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Trace), 7);
    }
}
