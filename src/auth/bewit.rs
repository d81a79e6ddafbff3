//! Bewits: Hawk credentials carried in a URL (`?bewit=…`), so a browser or a plain `curl` can
//! fetch one resource until an expiry time. Used by `buildSignedUrl` in the clients, and by the
//! queue itself when it hands out signed artifact URLs.
//!
//! A bewit is the unpadded URL-safe base64 of `id\exp\mac\ext` (backslash-separated; `exp` in
//! seconds; `mac` in standard base64). The MAC is a Hawk MAC of kind `bewit` with `ts` = `exp`,
//! an empty nonce, method `GET` (also for `HEAD`), the request-target *without* the bewit
//! parameter, the host and port, no payload hash, and the `ext`.

use super::Error;
use super::credentials::{Credentials, hawk_ext};
use super::encoding::{decode_base64_lenient, encode_base64_url_no_pad};
use super::hawk::{Artifacts, MacKind, calculate_mac, mac_is_valid, parse_unix_seconds};

/// Longest request-target searched for a bewit (as `hawk`'s limit on the URL).
pub const MAX_RESOURCE_LENGTH: usize = 16 * 1024;

/// The bewit parameter found in a request-target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundBewit<'a> {
    /// The parameter's value, still encoded.
    pub value: &'a str,
    /// The request-target with the parameter removed: what the MAC signs.
    pub resource_without_bewit: String,
}

/// Finds the bewit parameter as `hawk` does, with the pattern
/// `^(/.*)([?&])bewit=([^&$]*)(?:&(.+))?$`: the last `?bewit=` or `&bewit=` whose value runs to
/// the end or to an `&` followed by more parameters. The target without it is the part before,
/// then (if parameters follow) the `?` or `&` that introduced it and those parameters.
pub fn find(resource: &str) -> Option<FoundBewit<'_>> {
    if !resource.starts_with('/') || resource.len() > MAX_RESOURCE_LENGTH {
        return None;
    }
    const NEEDLE: &str = "bewit=";
    let mut search_end = resource.len();
    while let Some(at) = resource[..search_end].rfind(NEEDLE) {
        search_end = at;
        // The separator before `bewit=` must be `?` or `&`, and the path before it non-empty.
        let Some(separator_at) = at.checked_sub(1) else {
            break;
        };
        // Compared as a byte: the character before `bewit=` may be any, of several bytes.
        let separator = match resource.as_bytes()[separator_at] {
            b'?' => "?",
            b'&' => "&",
            _ => continue,
        };
        if separator_at == 0 {
            continue;
        }
        let after = &resource[at + NEEDLE.len()..];
        let value_end = after.find(['&', '$']).unwrap_or(after.len());
        let (value, tail) = after.split_at(value_end);
        let rest = match tail.strip_prefix('&') {
            None if tail.is_empty() => None,
            Some(rest) if !rest.is_empty() => Some(rest),
            // `$` after the value, or a lone trailing `&`: no match here.
            _ => continue,
        };
        let mut resource_without_bewit = resource[..separator_at].to_owned();
        if let Some(rest) = rest {
            resource_without_bewit.push_str(separator);
            resource_without_bewit.push_str(rest);
        }
        return Some(FoundBewit {
            value,
            resource_without_bewit,
        });
    }
    None
}

/// Whether the request-target looks like it carries a bewit (Taskcluster's own test,
/// `^/.*[?&]bewit=`), even one [`find`] cannot extract; such a request is refused rather than
/// treated as unauthenticated.
pub fn is_present(resource: &str) -> bool {
    resource.starts_with('/')
        && ["?bewit=", "&bewit="]
            .iter()
            .any(|needle| resource[1..].contains(needle))
}

/// A decoded bewit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bewit {
    pub id: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    pub mac: String,
    pub ext: Option<String>,
}

impl Bewit {
    /// Decodes a bewit parameter value: URL-safe base64 characters only, four
    /// backslash-separated parts, id, exp and mac present.
    pub fn decode(value: &str) -> Result<Bewit, Error> {
        let invalid = |reason: &str| Error::Bewit(reason.to_owned());
        if value.is_empty() {
            return Err(invalid("empty bewit"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid("invalid character in bewit"));
        }
        let bytes =
            decode_base64_lenient(value).ok_or_else(|| invalid("invalid bewit encoding"))?;
        let text = String::from_utf8(bytes)
            .ok()
            .filter(|text| text.is_ascii())
            .ok_or_else(|| invalid("invalid bewit encoding"))?;
        let parts: Vec<&str> = text.split('\\').collect();
        let [id, exp, mac, ext] = parts[..] else {
            return Err(invalid("invalid bewit structure"));
        };
        let exp = parse_unix_seconds(exp).filter(|exp| *exp > 0);
        let (Some(exp), false, false) = (exp, id.is_empty(), mac.is_empty()) else {
            return Err(invalid("missing bewit attributes"));
        };
        Ok(Bewit {
            id: id.to_owned(),
            exp,
            mac: mac.to_owned(),
            ext: (!ext.is_empty()).then(|| ext.to_owned()),
        })
    }

    /// The parameter value: unpadded URL-safe base64 of `id\exp\mac\ext`.
    pub fn encode(&self) -> String {
        let inner = format!(
            "{}\\{}\\{}\\{}",
            self.id,
            self.exp,
            self.mac,
            self.ext.as_deref().unwrap_or("")
        );
        encode_base64_url_no_pad(inner.as_bytes())
    }

    fn artifacts<'a>(&'a self, exp: &'a str, place: &Place<'a>) -> Artifacts<'a> {
        Artifacts {
            ts: exp,
            nonce: "",
            method: "GET",
            resource: place.resource_without_bewit,
            host: place.host,
            port: place.port,
            hash: None,
            ext: self.ext.as_deref(),
            app: None,
            dlg: None,
        }
    }

    /// Refuses the bewit once `exp` is reached (no clock skew, as in `hawk`).
    pub fn check_expiry(&self, now_millis: i64) -> Result<(), Error> {
        if self.exp.saturating_mul(1000) <= now_millis {
            return Err(Error::BewitExpired { expired: self.exp });
        }
        Ok(())
    }

    /// Whether the bewit's MAC is right for `place` under `key`, compared in constant time.
    pub fn mac_is_valid(&self, key: &str, place: &Place<'_>) -> bool {
        let exp = self.exp.to_string();
        mac_is_valid(key, MacKind::Bewit, &self.artifacts(&exp, place), &self.mac)
    }
}

/// What a bewit is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place<'a> {
    /// Request-target without the bewit, as received (path and `?query`, still encoded).
    pub resource_without_bewit: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// A bewit for `place`, valid until `exp` (unix seconds), signed with `credentials`; the
/// certificate of temporary credentials travels in its `ext`.
pub fn create(credentials: &Credentials, place: &Place<'_>, exp: i64) -> Result<String, Error> {
    let ext = hawk_ext(credentials, None).map_err(|error| Error::Certificate(error.to_string()))?;
    Ok(create_with_ext(
        &credentials.client_id,
        &credentials.access_token,
        place,
        exp,
        ext,
    ))
}

/// A bewit with an explicit `ext` (the Python client, for one, always sends `e30=`, `{}`).
pub fn create_with_ext(
    id: &str,
    key: &str,
    place: &Place<'_>,
    exp: i64,
    ext: Option<String>,
) -> String {
    let mut bewit = Bewit {
        id: id.to_owned(),
        exp,
        mac: String::new(),
        ext,
    };
    let exp_text = exp.to_string();
    bewit.mac = calculate_mac(key, MacKind::Bewit, &bewit.artifacts(&exp_text, place));
    bewit.encode()
}

/// `place`'s request-target with a `bewit` parameter appended (after `?` or `&`), to be put
/// behind the server's public origin.
pub fn sign_resource(
    credentials: &Credentials,
    place: &Place<'_>,
    exp: i64,
) -> Result<String, Error> {
    let bewit = create(credentials, place, exp)?;
    let separator = if place.resource_without_bewit.contains('?') {
        '&'
    } else {
        '?'
    };
    Ok(format!(
        "{}{separator}bewit={bewit}",
        place.resource_without_bewit
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multibyte_character_before_the_bewit_is_no_separator() {
        assert_eq!(find("/a\u{ff}bewit=xyz"), None);
        assert_eq!(
            find("/a?b=1&bewit=xyz&c=\u{20ac}bewit=q").map(|f| f.value),
            Some("xyz")
        );
        assert_eq!(find("/\u{20ac}?bewit=xyz").map(|f| f.value), Some("xyz"));
    }

    #[test]
    fn finds_the_bewit_as_hawk_does() {
        let found = |resource| find(resource).map(|f| (f.value, f.resource_without_bewit));
        assert_eq!(found("/a?bewit=xyz"), Some(("xyz", "/a".to_owned())));
        assert_eq!(
            found("/a?bewit=xyz&b=1&c=2"),
            Some(("xyz", "/a?b=1&c=2".to_owned()))
        );
        assert_eq!(
            found("/a?b=1&bewit=xyz&c=2"),
            Some(("xyz", "/a?b=1&c=2".to_owned()))
        );
        assert_eq!(
            found("/a?b=1&bewit=xyz"),
            Some(("xyz", "/a?b=1".to_owned()))
        );
        assert_eq!(found("/a?bewit="), Some(("", "/a".to_owned())));
        // The last one wins.
        assert_eq!(
            found("/a?bewit=one&bewit=two"),
            Some(("two", "/a?bewit=one".to_owned()))
        );
        // A lone trailing `&` or a `$` spoils that occurrence.
        assert_eq!(found("/a?bewit=xyz&"), None);
        assert_eq!(found("/a?bewit=x$y"), None);
        assert_eq!(found("/a?notbewit=xyz"), None);
        assert_eq!(found("/a?x=bewit=xyz"), None);
        assert_eq!(found("/a"), None);
        assert_eq!(found("?bewit=xyz"), None);
        assert_eq!(found("/?bewit=xyz"), Some(("xyz", "/".to_owned())));
        assert_eq!(found("http://h/a?bewit=xyz"), None);

        assert!(is_present("/a?bewit=xyz&"));
        assert!(is_present("/a?b=1&bewit=x$y"));
        assert!(!is_present("/?notbewit=x"));
        assert!(!is_present("?bewit=x"));
    }

    #[test]
    fn decode_refuses_malformed_bewits() {
        let encode = |inner: &str| encode_base64_url_no_pad(inner.as_bytes());
        assert_eq!(
            Bewit::decode(&encode("id\\123\\mac\\ext")).unwrap(),
            Bewit {
                id: "id".into(),
                exp: 123,
                mac: "mac".into(),
                ext: Some("ext".into())
            }
        );
        assert_eq!(Bewit::decode(&encode("id\\123\\mac\\")).unwrap().ext, None);
        for bad in [
            String::new(),
            "abc=".to_owned(),
            "ab+c".to_owned(),
            "a".to_owned(),
            encode("id\\123\\mac"),
            encode("id\\123\\mac\\ext\\more"),
            encode("\\123\\mac\\ext"),
            encode("id\\\\mac\\ext"),
            encode("id\\0\\mac\\ext"),
            encode("id\\12x\\mac\\ext"),
            encode("id\\123\\\\ext"),
            encode("ïd\\123\\mac\\ext"),
            encode_base64_url_no_pad(&[0xff, 0x5c, 0x31, 0x5c, 0x6d, 0x5c]),
        ] {
            assert!(Bewit::decode(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expiry_has_no_skew() {
        let bewit = Bewit {
            id: "a".into(),
            exp: 1_767_226_500,
            mac: "m".into(),
            ext: None,
        };
        assert!(bewit.check_expiry(1_767_226_499_999).is_ok());
        assert!(bewit.check_expiry(1_767_226_500_000).is_err());
    }
}
