//! Progress lines on stderr: `bench NAME: message`, or `bench NAME [  t s]: message` with the
//! seconds since [`start_clock`] (long runs, where the time says where it went).
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Starts the clock [`say_timed`] counts from (the first call wins).
pub fn start_clock() {
    START.get_or_init(Instant::now);
}

/// `bench NAME: MSG`.
pub fn say(bench: &str, msg: impl AsRef<str>) {
    eprintln!("bench {bench}: {}", msg.as_ref());
}

/// `bench NAME [  t s]: MSG`, t in seconds since [`start_clock`].
pub fn say_timed(bench: &str, msg: impl AsRef<str>) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("bench {bench} [{t:5.1} s]: {}", msg.as_ref());
}
