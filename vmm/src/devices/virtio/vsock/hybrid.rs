//! The hybrid vsock handshake on the host socket: `CONNECT <port>\n` from the client.

/// Longest handshake line accepted.
pub const MAX_LINE: usize = 32;

/// What a partial handshake line amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// No newline yet.
    Incomplete,
    Connect(u32),
    Invalid(String),
}

/// Parses the bytes a client sent so far.
pub fn parse(line: &[u8]) -> Handshake {
    let Some(end) = line.iter().position(|b| *b == b'\n') else {
        return if line.len() >= MAX_LINE {
            Handshake::Invalid(format!("no newline in the first {MAX_LINE} bytes"))
        } else {
            Handshake::Incomplete
        };
    };
    if end + 1 != line.len() {
        return Handshake::Invalid("data after the CONNECT line before OK".into());
    }
    let text = String::from_utf8_lossy(&line[..end]);
    let text = text.trim_end_matches('\r');
    match text.strip_prefix("CONNECT ").map(str::parse::<u32>) {
        Some(Ok(port)) => Handshake::Connect(port),
        _ => Handshake::Invalid(format!("expected \"CONNECT <port>\", got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse(b"CONNECT 1024\n"), Handshake::Connect(1024));
        assert_eq!(parse(b"CONNECT 52\r\n"), Handshake::Connect(52));
        assert_eq!(parse(b"CONNECT 10"), Handshake::Incomplete);
        assert!(matches!(parse(b"CONNECT x\n"), Handshake::Invalid(_)));
        assert!(matches!(parse(b"connect 1\n"), Handshake::Invalid(_)));
        assert!(matches!(
            parse(b"CONNECT 99999999999\n"),
            Handshake::Invalid(_)
        ));
        assert!(matches!(parse(&[b'A'; 40]), Handshake::Invalid(_)));
        assert!(matches!(parse(b"CONNECT 1\nhello"), Handshake::Invalid(_)));
    }
}
