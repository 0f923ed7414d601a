//! `ip:port` as text, held inline: what a backend is named in its Maglev table and how views
//! show an endpoint's address.
//!
//! Contract: [`AddressText::new`] writes exactly what `format!("{ip}:{port}")` writes (at most
//! 21 bytes), without allocating; it reads, prints and serializes as that string.
use std::fmt;
use std::net::Ipv4Addr;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AddressText {
    len: u8,
    buf: [u8; 21],
}

impl AddressText {
    pub fn new(ip: Ipv4Addr, port: u16) -> Self {
        let mut buf = [0u8; 21];
        let mut len = 0;
        for (i, o) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            if o >= 100 {
                buf[len] = b'0' + o / 100;
                len += 1;
            }
            if o >= 10 {
                buf[len] = b'0' + o / 10 % 10;
                len += 1;
            }
            buf[len] = b'0' + o % 10;
            len += 1;
        }
        buf[len] = b':';
        len += 1;
        let port = port as u32;
        let mut div = 10_000;
        while div > 1 {
            if port >= div {
                buf[len] = b'0' + (port / div % 10) as u8;
                len += 1;
            }
            div /= 10;
        }
        buf[len] = b'0' + (port % 10) as u8;
        len += 1;
        AddressText { len: len as u8, buf }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).expect("digits, dots and a colon")
    }
}

impl AsRef<[u8]> for AddressText {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::ops::Deref for AddressText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for AddressText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AddressText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl serde::Serialize for AddressText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
#[test]
fn written_as_display_writes_it() {
    for (ip, port) in [
        ([0, 0, 0, 0], 0),
        ([10, 244, 0, 5], 8080),
        ([255, 255, 255, 255], 65535),
        ([1, 20, 100, 9], 53),
        ([100, 10, 199, 250], 10000),
        ([9, 99, 109, 200], 1009),
        ([0, 1, 2, 3], 100),
    ] {
        let ip = Ipv4Addr::from(ip);
        let t = AddressText::new(ip, port);
        assert_eq!(t.as_str(), format!("{ip}:{port}"));
        assert_eq!(t.to_string(), format!("{ip}:{port}"));
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{ip}:{port}\""));
    }
}
