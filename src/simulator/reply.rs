//! Tencent Cloud API 3.0's reply envelope, as every simulated action answers: `{"Response": {…,
//! "RequestId"}}`, and the error form `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`
//! (Tencent's API 3.0 "返回结果" page; tests/fixtures/tencent-doc-examples.json, `error_envelope`).

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// `response` with its RequestId, in the envelope.
pub(crate) fn envelope(mut response: Value, rid: &str) -> Response {
    if let Some(obj) = response.as_object_mut() {
        obj.insert("RequestId".into(), Value::String(rid.to_string()));
    }
    axum::Json(json!({ "Response": response })).into_response()
}

/// Tencent's error reply with `code` and `message`.
pub(crate) fn error(code: &str, message: &str, rid: &str) -> Response {
    envelope(json!({ "Error": { "Code": code, "Message": message } }), rid)
}
