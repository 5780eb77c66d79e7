//! `--log.format=logfmt`: one line per event in the keys the Prometheus ecosystem uses
//! (`ts`, `level`, `msg`, as go-kit's logfmt logger writes them), then the event's own fields.
//!
//! ```text
//! ts=2026-12-01T23:47:10.123Z level=info target=tiw_push_exporter::exporter msg="restored state" tasks=120 apps=2
//! ```
//!
//! tracing names an event's text `message`; tracing-logfmt writes that key as is and cannot rename
//! it, so the event formatter is ours. Values are quoted when they hold a space, `=`, `"`, a
//! control character or nothing, with `"`, `\` and control characters escaped, so a value read
//! from the network (a task id, an error) cannot forge another key or another line.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `--log.format=logfmt`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::with_capacity(160);
        let meta = event.metadata();
        let now = time::OffsetDateTime::now_utc();
        let ts = now
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .map_err(|_| fmt::Error)?;
        let level = match *meta.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(line, "ts={ts} level={level} target={}", meta.target())?;
        let mut fields = Fields {
            msg: None,
            rest: String::new(),
        };
        event.record(&mut fields);
        if let Some(msg) = fields.msg {
            line.push_str(" msg=");
            push_value(&mut line, &msg);
        }
        line.push_str(&fields.rest);
        // Fields of the spans the event happened in, outermost first, as the fields formatter wrote them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(formatted) = span.extensions().get::<FormattedFields<N>>() {
                    if !formatted.is_empty() {
                        write!(line, " {formatted}")?;
                    }
                }
            }
        }
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields: `message` becomes `msg`, the rest `key=value` in order.
struct Fields {
    msg: Option<String>,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = Some(value.to_string());
            return;
        }
        self.rest.push(' ');
        // `r#type` and the like: the key as written, without the raw-identifier prefix.
        self.rest.push_str(field.name().trim_start_matches("r#"));
        self.rest.push('=');
        push_value(&mut self.rest, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }
}

/// Appends `value`, quoted and escaped when logfmt needs it.
fn push_value(out: &mut String, value: &str) {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c.is_control());
    if !needs_quotes {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(Logfmt)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn writes_msg_and_quotes_what_needs_it() {
        let text = logged(|| {
            tracing::info!(
                tasks = 3,
                path = "/var/lib/x y",
                task_id = "a\"b=c\nlevel=error",
                empty = "",
                "restored state"
            );
        });
        let line = text.strip_suffix('\n').unwrap();
        assert!(!line.contains('\n'), "{line}");
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(ts.starts_with("ts=20") && ts.ends_with('Z'), "{ts}");
        assert_eq!(
            rest,
            r#"level=info target=tiw_push_exporter::logfmt::tests msg="restored state" tasks=3 path="/var/lib/x y" task_id="a\"b=c\nlevel=error" empty="""#
        );
    }

    #[test]
    fn an_event_without_text_has_no_msg() {
        let bare = logged(|| tracing::event!(Level::ERROR, code = 7));
        assert!(!bare.contains("msg="), "{bare}");
        assert!(
            bare.contains("level=error") && bare.trim_end().ends_with("code=7"),
            "{bare}"
        );
    }
}
