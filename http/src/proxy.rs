//! The PROXY protocol (HAProxy's, versions 1 and 2), sans IO: a proxy in front of a server
//! says, before the connection's first bytes, which client it carries. Only a proxy the server
//! trusts may say so; the server decides that before it reads a header at all.

use std::net::IpAddr;

use crate::head::HeadError;

/// Version 1 starts with this text and is at most 107 bytes long...
const PROXY_V1: &[u8] = b"PROXY ";
const PROXY_V1_MAX: usize = 107;
/// ...and version 2 with this signature.
const PROXY_V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads a PROXY protocol header at the start of `buffer` (sans IO): `Ok(None)` while more
/// bytes are needed; else the client it names (none for `UNKNOWN` or `LOCAL`) and how many
/// bytes the header took. A buffer that starts with neither signature has no header.
pub fn parse(buffer: &[u8]) -> Result<Option<(Option<IpAddr>, usize)>, HeadError> {
    let needed = |signature: &[u8]| buffer.len() < signature.len() && signature.starts_with(buffer);
    if needed(PROXY_V1) || needed(PROXY_V2) {
        return Ok(None);
    }
    if buffer.starts_with(PROXY_V1) {
        let Some(end) = crate::head::find(&buffer[..buffer.len().min(PROXY_V1_MAX)], b"\r\n")
        else {
            return if buffer.len() >= PROXY_V1_MAX {
                Err(HeadError::Malformed)
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&buffer[..end]).map_err(|_| HeadError::Malformed)?;
        let fields: Vec<&str> = line.split(' ').collect();
        let client = match fields.as_slice() {
            ["PROXY", "UNKNOWN", ..] => None,
            [
                "PROXY",
                "TCP4" | "TCP6",
                source,
                destination,
                source_port,
                destination_port,
            ] => {
                let source: IpAddr = source.parse().map_err(|_| HeadError::Malformed)?;
                let _: IpAddr = destination.parse().map_err(|_| HeadError::Malformed)?;
                for port in [source_port, destination_port] {
                    port.parse::<u16>().map_err(|_| HeadError::Malformed)?;
                }
                Some(source)
            }
            _ => return Err(HeadError::Malformed),
        };
        return Ok(Some((client, end + 2)));
    }
    if buffer.starts_with(PROXY_V2) {
        let Some(header) = buffer.get(..16) else {
            return Ok(None);
        };
        let (version_command, family) = (header[12], header[13]);
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if version_command >> 4 != 2 || length > 512 {
            return Err(HeadError::Malformed);
        }
        let Some(addresses) = buffer.get(16..16 + length) else {
            return Ok(None);
        };
        let client = match (version_command & 0x0f, family >> 4) {
            (0, _) => None, // LOCAL: the proxy's own connection (a health check)
            (1, 1) if addresses.len() >= 12 => Some(IpAddr::from(
                <[u8; 4]>::try_from(&addresses[..4]).map_err(|_| HeadError::Malformed)?,
            )),
            (1, 2) if addresses.len() >= 36 => Some(IpAddr::from(
                <[u8; 16]>::try_from(&addresses[..16]).map_err(|_| HeadError::Malformed)?,
            )),
            (1, 0) => None, // UNSPEC
            _ => return Err(HeadError::Malformed),
        };
        return Ok(Some((client, 16 + length)));
    }
    Ok(Some((None, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_name_the_client() {
        let v1 = b"PROXY TCP4 81.2.69.142 127.0.0.1 56324 8090\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(v1),
            Ok(Some((Some("81.2.69.142".parse().unwrap()), 45)))
        );
        assert_eq!(parse(b"PROXY TCP4 81.2"), Ok(None));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((None, 15))));
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), Err(HeadError::Malformed));
        let endless = [PROXY_V1, &[b'x'; 200]].concat();
        assert_eq!(parse(&endless), Err(HeadError::Malformed));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Some((None, 0))));
        let mut v2 = PROXY_V2.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 89, 160, 20, 112, 127, 0, 0, 1, 0x1f, 0x90, 0x1f, 0x90,
        ]);
        assert_eq!(
            parse(&v2),
            Ok(Some((Some("89.160.20.112".parse().unwrap()), 28)))
        );
        assert_eq!(parse(&v2[..20]), Ok(None));
        let mut bad = PROXY_V2.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert_eq!(parse(&bad), Err(HeadError::Malformed));
    }
}
