//! The CLI's logs: tracing to the `--log` file (else stderr), in runc's formats. With
//! `--log-format json` every line is a JSON object `{"level","msg","time"}` as runc (logrus)
//! writes it: containerd's runc shim (Docker) reads the last error's `msg` from that file and
//! reports "unable to retrieve OCI runtime error" when any line is not such an object.

use std::io::Write;
use std::time::SystemTime;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::{Global, LogFormat, client};

/// Sets up tracing: to the --log file if given, else stderr for the monitor's own file-less
/// runs; level from --debug; lines in the --log-format.
pub fn init_logging(g: &Global) {
    let level = if g.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAKO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let file = g.log.as_ref().and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (file, g.log_format) {
        (Some(file), LogFormat::Json) => builder
            .event_format(RuncJson)
            .with_writer(std::sync::Mutex::new(file))
            .try_init(),
        (Some(file), LogFormat::Text) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init(),
        (None, _) => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Reports a failed command on stderr and, in the requested format, in the --log file
/// (conmon and containerd's runc shim read the last error from there).
pub fn report_error(g: &Global, e: &anyhow::Error) {
    eprintln!("hako: {e:#}");
    let Some(path) = &g.log else { return };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let msg = format!("{e:#}");
    let line = match g.log_format {
        LogFormat::Json => json_line("error", &msg),
        LogFormat::Text => format!(
            "time=\"{}\" level=error msg={msg:?}",
            client::rfc3339(SystemTime::now())
        ),
    };
    let _ = writeln!(f, "{line}");
}

/// One log line as runc's JSON log holds it.
fn json_line(level: &str, msg: &str) -> String {
    serde_json::json!({"level": level, "msg": msg, "time": client::rfc3339(SystemTime::now())})
        .to_string()
}

/// logrus's name of a level.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// A tracing event as one runc JSON log line: its message and fields (as text) in `msg`.
struct RuncJson;

impl<S, N> FormatEvent<S, N> for RuncJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut msg = String::new();
        ctx.format_fields(Writer::new(&mut msg), event)?;
        writeln!(
            writer,
            "{}",
            json_line(level_name(event.metadata().level()), &msg)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_are_runcs_objects() {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(RuncJson)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(sandbox_id = "s1", "hako-vmm runs as root: \"quoted\"\nnext");
            tracing::error!("it failed");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "warning");
        let msg = lines[0]["msg"].as_str().unwrap();
        assert!(
            msg.contains("runs as root: \"quoted\"\nnext") && msg.contains("s1"),
            "{msg}"
        );
        assert_eq!(
            (&lines[1]["level"], &lines[1]["msg"]),
            (&"error".into(), &"it failed".into())
        );
        assert!(lines[1]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
