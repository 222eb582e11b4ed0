//! Secrets in URLs and messages: a URL shown only redacted, and a scrubber
//! for driver messages that may echo a connection string. A leaf: used by
//! config, sources and alert rendering, it imports none of them.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A Standard Webhooks signing key: the bytes of a `whsec_<base64>` or
/// plain base64 secret, decoded as the official `standardwebhooks`
/// libraries decode it (so what they verify is what was signed). Never
/// shown.
#[derive(Clone)]
pub struct WebhookKey(secrecy::SecretSlice<u8>);

/// Shortest key accepted: below 128 bits a key can be guessed, and a
/// guessed key forges pages.
const MIN_KEY_BYTES: usize = 16;

/// How to make a good secret, for error messages.
const MAKE_ONE: &str = "make one with: echo \"whsec_$(openssl rand -base64 32)\"";

impl WebhookKey {
    pub fn parse(secret: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| {
                format!(
                    "not a Standard Webhooks secret: `whsec_<base64>` or base64, which the \
                     standardwebhooks libraries decode into the key; {MAKE_ONE}"
                )
            })?;
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the secret decodes to {} bytes; at least {MIN_KEY_BYTES} are needed; {MAKE_ONE}",
                key.len()
            ));
        }
        Ok(Self(key.into()))
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookKey([redacted])")
    }
}

/// A URL that may hold a password: shown only redacted.
#[derive(Clone)]
pub struct SecretUrl {
    secret: SecretString,
    redacted: String,
}

/// Query parameters whose values are credentials (`?password=` for
/// libpq, `?sentinelPassword=` for Redis Sentinel, `?token=`...), compared
/// case-insensitively.
const SECRET_PARAMS: [&str; 8] = [
    "password",
    "pass",
    "pwd",
    "secret",
    "token",
    "sslpassword",
    "api_key",
    "sentinelpassword",
];

fn is_secret_param(key: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p))
}

impl SecretUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(s).map_err(|e| format!("not a valid URL ({e})"))?;
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| is_secret_param(&k)) {
            // The other parameters as written (`node=host:port` stays so).
            let query = url.query().unwrap_or_default();
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _))
                        if is_secret_param(
                            &percent_encoding::percent_decode_str(k).decode_utf8_lossy(),
                        ) =>
                    {
                        format!("{k}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            url.set_query(Some(&pairs.join("&")));
        }
        Ok(Self {
            secret: SecretString::from(s.to_string()),
            redacted: url.to_string(),
        })
    }

    /// A URL that is itself a credential (Slack, Discord and Teams
    /// webhooks carry their token in the path or the query): shown as
    /// `https://host/***`.
    pub fn parse_credential(s: &str) -> Result<Self, String> {
        let mut u = Self::parse(s)?;
        let origin = url::Url::parse(s)
            .map(|x| x.origin().ascii_serialization())
            .unwrap_or_default();
        u.redacted = format!("{origin}/***");
        Ok(u)
    }

    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The URL's password and credential query parameters, as written and
    /// percent-decoded (empty forms left out), for [`scrub_secrets`].
    pub fn password_forms(&self) -> Vec<SecretString> {
        let Ok(url) = url::Url::parse(self.expose()) else {
            return Vec::new();
        };
        let mut raws: Vec<String> = url.password().map(str::to_string).into_iter().collect();
        if let Some(q) = url.query() {
            for pair in q.split('&') {
                if let Some((k, v)) = pair.split_once('=')
                    && is_secret_param(k)
                {
                    raws.push(v.to_string());
                }
            }
        }
        let mut out = Vec::new();
        for raw in raws {
            // Decoded as a query decodes it (`+` is a space) and as a path
            // does; then as written.
            for encoded in [raw.replace('+', " "), raw.clone()] {
                if let Ok(decoded) = percent_encoding::percent_decode_str(&encoded).decode_utf8()
                    && decoded != raw
                    && !decoded.is_empty()
                {
                    out.push(SecretString::from(decoded.into_owned()));
                }
            }
            if !raw.is_empty() {
                out.push(SecretString::from(raw));
            }
        }
        out
    }
}

/// Replace every occurrence of each secret in `message` by `***` (for
/// messages from drivers that may echo a connection string).
pub fn scrub_secrets(secrets: &[SecretString], mut message: String) -> String {
    for s in secrets {
        let s = s.expose_secret();
        if !s.is_empty() && message.contains(s) {
            message = message.replace(s, "***");
        }
    }
    message
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_scrubbed_raw_and_decoded() {
        let url = SecretUrl::parse("redis://user:p%40ss@h:1").unwrap();
        let msg = scrub_secrets(&url.password_forms(), "a p@ss b p%40ss c".into());
        assert_eq!(msg, "a *** b *** c");
        assert!(
            SecretUrl::parse("redis://h:1")
                .unwrap()
                .password_forms()
                .is_empty()
        );
    }

    #[test]
    fn credential_query_parameters_are_redacted_and_scrubbed() {
        let u = SecretUrl::parse(
            "postgres://db.internal:5432/app?sslmode=require&password=p%40ss&user=svc",
        )
        .unwrap();
        assert_eq!(
            u.redacted(),
            "postgres://db.internal:5432/app?sslmode=require&password=***&user=svc"
        );
        assert!(!format!("{u:?} {u}").contains("p@ss"));
        let msg = scrub_secrets(&u.password_forms(), "bad p@ss (p%40ss)".into());
        assert_eq!(msg, "bad *** (***)");
    }

    #[test]
    fn a_sentinel_password_is_redacted_and_scrubbed() {
        let u = SecretUrl::parse(
            "redis-sentinel://:main-pw@s1:26379/0?sentinelServiceName=main&sentinelPassword=s3nt&node=s2:26379",
        )
        .unwrap();
        assert_eq!(
            u.redacted(),
            "redis-sentinel://:***@s1:26379/0?sentinelServiceName=main&sentinelPassword=***&node=s2:26379"
        );
        let msg = scrub_secrets(&u.password_forms(), "auth s3nt main-pw".into());
        assert_eq!(msg, "auth *** ***");
    }

    proptest::proptest! {
        /// Whatever the password (plain or needing percent-encoding), the
        /// redacted, displayed and debug forms never hold it, and a driver
        /// message echoing the URL is scrubbed of it.
        #[test]
        fn a_password_is_never_shown(pw in "[ -~]{4,24}") {
            let encoded =
                percent_encoding::utf8_percent_encode(&pw, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let raw = format!("redis://user:{encoded}@cache.internal:6379/0");
            let shown = "redis://user:***@cache.internal:6379/0 failed to connect to : bad password";
            proptest::prop_assume!(!shown.contains(pw.as_str()));
            let u = SecretUrl::parse(&raw).unwrap();
            for text in [u.redacted().to_string(), u.to_string(), format!("{u:?}")] {
                proptest::prop_assert!(!text.contains(pw.as_str()), "{}", text);
                proptest::prop_assert!(!text.contains(encoded.as_str()), "{}", text);
            }
            let msg = format!("failed to connect to {raw}: bad password {pw}");
            let scrubbed = scrub_secrets(&u.password_forms(), msg);
            proptest::prop_assert!(!scrubbed.contains(pw.as_str()), "{}", scrubbed);
        }
    }
}
