//! Carrying a viewer's keycard into what a playlist refers to: a viewer let in on a playlist
//! can then fetch every playlist, part and segment it names, whatever the player. Every URI of
//! an HLS playlist (lines and `URI="…"` attributes) and the templates of a DASH manifest get
//! `keycard=…` added to their query. Only the viewer's copy of the text changes; the cached
//! playlist is shared.

/// Where a keycard is looked for in a request, in order: the query, a cookie, the
/// Authorization header.
pub const QUERY_PARAMETER: &str = "keycard";
/// The name Akamai's EdgeAuth tools give the token by default, accepted too.
pub const AKAMAI_PARAMETER: &str = "__token__";

/// The keycard of a request, from its query, `Cookie` header or `Authorization` header.
pub fn find_keycard(
    query: Option<&str>,
    cookie: Option<&str>,
    authorization: Option<&str>,
) -> Option<String> {
    let named = |name: &str| name == QUERY_PARAMETER || name == AKAMAI_PARAMETER;
    let from_query = query.and_then(|query| {
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            named(name).then(|| estuary_proto::url::percent_decode(value))
        })
    });
    let from_cookie = || {
        cookie?.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            named(name).then(|| estuary_proto::url::percent_decode(value))
        })
    };
    let from_header = || {
        authorization?
            .strip_prefix(estuary_proto::keycard::AUTHORIZATION_SCHEME)
            .map(|rest| rest.trim().to_owned())
    };
    from_query.or_else(from_cookie).or_else(from_header)
}

/// The query without the keycard (what the cache keys on, so that all viewers share).
pub fn without_keycard(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && name != QUERY_PARAMETER && name != AKAMAI_PARAMETER
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The keycard as a query value: the characters that would end or change it are escaped.
fn query_value(keycard: &str) -> String {
    let mut out = String::with_capacity(keycard.len());
    for c in keycard.chars() {
        match c {
            '%' | '&' | '#' | '+' | ' ' | '"' | '<' | '>' => {
                for byte in c.to_string().bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn with_keycard(uri: &str, value: &str, separator_after_query: &str) -> String {
    let separator = if uri.contains('?') {
        separator_after_query
    } else {
        "?"
    };
    format!("{uri}{separator}{QUERY_PARAMETER}={value}")
}

/// An HLS playlist with the keycard added to every URI it names.
pub fn into_playlist(text: &str, keycard: &str) -> String {
    let value = query_value(keycard);
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        if line.starts_with('#') {
            let mut rest = line;
            while let Some(at) = rest.find("URI=\"") {
                let (before, after) = rest.split_at(at + 5);
                out.push_str(before);
                let Some(end) = after.find('"') else {
                    rest = after;
                    break;
                };
                out.push_str(&with_keycard(&after[..end], &value, "&"));
                rest = &after[end..];
            }
            out.push_str(rest);
        } else if line.trim().is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&with_keycard(line.trim(), &value, "&"));
        }
        out.push('\n');
    }
    out
}

/// A DASH manifest with the keycard added to its segment templates.
pub fn into_manifest(text: &str, keycard: &str) -> String {
    let value = query_value(keycard).replace('&', "&amp;");
    let mut out = text.to_owned();
    for attribute in ["media=\"", "initialization=\""] {
        let mut rewritten = String::with_capacity(out.len() + 256);
        let mut rest = out.as_str();
        while let Some(at) = rest.find(attribute) {
            let (before, after) = rest.split_at(at + attribute.len());
            rewritten.push_str(before);
            let Some(end) = after.find('"') else {
                rest = after;
                break;
            };
            rewritten.push_str(&with_keycard(&after[..end], &value, "&amp;"));
            rest = &after[end..];
        }
        rewritten.push_str(rest);
        out = rewritten;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "exp=2000~acl=/live/demo/*~hmac=00ff";

    #[test]
    fn keycards_are_found_in_query_cookie_or_header() {
        assert_eq!(
            find_keycard(Some("a=1&keycard=exp%3D2000~acl=/x"), None, None).as_deref(),
            Some("exp=2000~acl=/x")
        );
        assert_eq!(
            find_keycard(None, Some("theme=dark; keycard=abc"), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            find_keycard(None, None, Some("Bearer abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            find_keycard(Some("__token__=exp=1~acl=/*~hmac=00"), None, None).as_deref(),
            Some("exp=1~acl=/*~hmac=00")
        );
        assert_eq!(find_keycard(Some("a=1"), None, None), None);
        assert_eq!(
            without_keycard("_HLS_msn=5&keycard=abc&_HLS_part=1"),
            "_HLS_msn=5&_HLS_part=1"
        );
    }

    #[test]
    fn every_uri_of_a_playlist_carries_the_keycard() {
        let playlist = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=0.33,URI=\"5.0.m4s\",INDEPENDENT=YES\n#EXTINF:2.0,\n5.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5.1.m4s\"\n#EXT-X-RENDITION-REPORT:URI=\"../v360/media.m3u8\",LAST-MSN=5,LAST-PART=0\nv720/media.m3u8?x=1\n";
        let carried = into_playlist(playlist, CARD);
        let expected = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4?keycard=exp=2000~acl=/live/demo/*~hmac=00ff\"\n#EXT-X-PART:DURATION=0.33,URI=\"5.0.m4s?keycard=exp=2000~acl=/live/demo/*~hmac=00ff\",INDEPENDENT=YES\n#EXTINF:2.0,\n5.m4s?keycard=exp=2000~acl=/live/demo/*~hmac=00ff\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5.1.m4s?keycard=exp=2000~acl=/live/demo/*~hmac=00ff\"\n#EXT-X-RENDITION-REPORT:URI=\"../v360/media.m3u8?keycard=exp=2000~acl=/live/demo/*~hmac=00ff\",LAST-MSN=5,LAST-PART=0\nv720/media.m3u8?x=1&keycard=exp=2000~acl=/live/demo/*~hmac=00ff\n";
        assert_eq!(carried, expected);
    }

    #[test]
    fn a_manifest_s_templates_carry_the_keycard() {
        let mpd = r#"<SegmentTemplate timescale="3000" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Number$.m4s"/>"#;
        assert_eq!(
            into_manifest(mpd, "a&b"),
            r#"<SegmentTemplate timescale="3000" initialization="$RepresentationID$/init.mp4?keycard=a%26b" media="$RepresentationID$/$Number$.m4s?keycard=a%26b"/>"#
        );
    }
}
