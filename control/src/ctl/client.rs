//! Client side of the control socket.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::Request;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the switch at {path} (is `podswitch run` running? `show` needs root)")]
    Connect { path: String, source: std::io::Error },
    #[error("talking to the switch at {path}")]
    Io { path: String, source: std::io::Error },
    #[error("the switch sent an answer that is not JSON: {0}")]
    BadAnswer(String),
    #[error("the switch refused the request: {0}")]
    Refused(String),
    #[error("the switch's answer does not have the shape this `podswitch` expects (another version?): {0}")]
    Shape(serde_json::Error),
}

/// Reads an answer as the reply type `T` (see [`super::replies`]).
pub fn read<T: serde::de::DeserializeOwned>(answer: &serde_json::Value) -> Result<T, ClientError> {
    T::deserialize(answer).map_err(ClientError::Shape)
}

/// How long [`request`] waits for an answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Sends `req` and returns the answer object (with `ok` true).
pub fn request(socket: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    request_within(socket, req, ANSWER_WITHIN)
}

/// [`request`], waiting up to `within` for the answer (a request the switch answers only when
/// something happened, such as [`Request::WaitPort`]).
pub fn request_within(socket: &Path, req: &Request, within: Duration) -> Result<serde_json::Value, ClientError> {
    let path = socket.display().to_string();
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect { path: path.clone(), source })?;
    let io = |source| ClientError::Io { path: path.clone(), source };
    stream.set_read_timeout(Some(within.max(Duration::from_millis(1)))).map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    let v: serde_json::Value = serde_json::from_str(&answer).map_err(|_| ClientError::BadAnswer(answer.clone()))?;
    if v.get("ok").and_then(serde_json::Value::as_bool) != Some(true) {
        let e = v.get("error").and_then(|e| e.as_str()).unwrap_or("no reason given").to_string();
        return Err(ClientError::Refused(e));
    }
    Ok(v)
}
