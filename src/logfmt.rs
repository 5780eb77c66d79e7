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

/// Characters that change how a line reads without showing (Unicode's format characters: bidi
/// overrides and isolates such as U+202E, zero-width ones, the BOM; and the line and paragraph
/// separators): escaped like control characters, so that text from the network cannot make a
/// log line read as something else on a terminal or in a log viewer.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Standard error for the JSON log format, with [`is_invisible`] characters written as `\uXXXX`
/// escapes: they can stand only inside JSON strings, where the escape is the same text, so every
/// line stays the JSON it was and no longer hides a bidi override from a person reading it.
pub fn json_stderr() -> EscapingStderr {
    EscapingStderr
}

/// See [`json_stderr`].
#[derive(Clone, Copy, Debug)]
pub struct EscapingStderr;

impl std::io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) if text.chars().any(is_invisible) => err.write_all(escape_invisible(text).as_bytes()),
            _ => err.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapingStderr {
    type Writer = EscapingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        EscapingStderr
    }
}

/// `text` with every [`is_invisible`] character as a JSON `\uXXXX` escape (all are in the BMP).
pub fn escape_invisible(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 12);
    for c in text.chars() {
        if is_invisible(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Appends `value`, quoted and escaped when logfmt needs it.
fn push_value(out: &mut String, value: &str) {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c.is_control() || is_invisible(c));
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
            c if c.is_control() || is_invisible(c) => {
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

    /// U+202E and its kind from the network never reach a log line raw, in either format.
    #[test]
    fn bidi_and_other_invisible_characters_are_escaped() {
        let text = logged(|| tracing::info!(task_id = "abc\u{202E}gnp.exe\u{200B}", "seen"));
        assert!(text.contains(r#"task_id="abc\u{202e}gnp.exe\u{200b}""#), "{text}");
        assert!(!text.chars().any(is_invisible), "{text}");
        let json = serde_json::json!({"task_id": "abc\u{202E}x"}).to_string();
        let escaped = escape_invisible(&json);
        assert_eq!(escaped, r#"{"task_id":"abc\u202ex"}"#);
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["task_id"], "abc\u{202E}x", "the same JSON value");
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
