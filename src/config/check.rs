//! [`Check`]: converts the config's untyped leaves, collecting every problem with its key path.

use std::time::Duration;

use serde_yaml::Value;

use super::Problem;

pub(super) struct Check<'a> {
    pub(super) problems: &'a mut Vec<Problem>,
}

impl Check<'_> {
    pub(super) fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// A plain string; numbers and booleans are accepted as their text.
    pub(super) fn string(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        match v? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.fail(path, "expected a string");
                None
            }
        }
    }

    /// A secret: never echoed in a message.
    pub(super) fn secret(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        self.string(path, v).filter(|s| !s.is_empty())
    }

    pub(super) fn integer(&mut self, path: &str, v: Option<&Value>) -> Option<i64> {
        let parsed = match v? {
            Value::Null => return None,
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.fail(path, format!("expected an integer, got {}", describe(v?)));
        }
        parsed
    }

    pub(super) fn boolean(&mut self, path: &str, v: Option<&Value>, default: bool) -> bool {
        let Some(v) = v else { return default };
        match v {
            Value::Null => default,
            Value::Bool(b) => *b,
            Value::String(s) if s == "true" => true,
            Value::String(s) if s == "false" => false,
            other => {
                self.fail(path, format!("expected true or false, got {}", describe(other)));
                default
            }
        }
    }

    pub(super) fn duration(&mut self, path: &str, v: Option<&Value>, default: Duration) -> Duration {
        let Some(text) = self.string(path, v) else {
            return default;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.fail(path, "must be longer than 0");
                default
            }
            Err(_) => {
                self.fail(
                    path,
                    format!("expected a duration such as 500ms, 15s or 1h, got {text:?}"),
                );
                default
            }
        }
    }
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() <= 40 => format!("{s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "nothing".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}
