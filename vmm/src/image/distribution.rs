//! The HTTP exchanges of the OCI distribution protocol that `husk pull`
//! needs: the version check (`GET /v2/`) and the auth challenge it answers
//! with, a bearer token, manifests and blobs. Over reqwest, with every
//! response body read through a cap.
//!
//! Why by hand rather than through oci-client: a registry is untrusted
//! input, and oci-client 0.18 reads manifests (`bytes()`), token answers
//! (`text()`) and error bodies whole into memory before its caller can look
//! at their size; it also builds its reqwest client itself, so no limit can
//! be put around those reads, neither per call nor at the transport. A
//! hostile registry could then grow the pull helper until the OOM killer
//! ends it (security review F3). The exchanges a pull needs are few and
//! simple, so they are made here on reqwest (the HTTP client oci-client
//! uses too), and the bodies are bounded:
//!
//! - manifests and indexes: at most [`MAX_JSON`] (4 MiB), the limit the
//!   store applies to them anyway;
//! - token answers: at most [`MAX_TOKEN`] (1 MiB);
//! - error answers: only their first [`MAX_ERROR_BODY`] (64 KiB) are read,
//!   enough for an error envelope; the rest is never fetched;
//! - blobs stream through [`Registry::blob`]; the caller stops a layer at
//!   the size its descriptor announces, a config at that or 4 MiB.
//!
//! A `Content-Length` past a cap fails before any byte of the body is read.
//! Small documents also have an overall deadline ([`SMALL_TIMEOUT`]), so a
//! registry that sends one byte now and then cannot hold a pull forever.
//! Responses are never decompressed (reqwest is built without gzip), and
//! reqwest drops the `Authorization` header on a redirect to another host.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};

use super::auth::Basic;
use super::manifest::MAX_JSON;
use super::ImageError;

/// The largest token answer read.
pub const MAX_TOKEN: u64 = 1 << 20;
/// How much of an error answer is read (the rest is dropped).
pub const MAX_ERROR_BODY: u64 = 64 << 10;
/// The overall deadline of a request for a small document (version check,
/// token, manifest), body included.
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach a registry.
pub struct Config {
    /// The image's canonical name, for messages.
    pub name: String,
    /// `host[:port]` as written in the reference.
    pub registry: String,
    /// The repository path (`library/busybox`).
    pub repository: String,
    /// Credentials from an auth file, if any.
    pub basic: Option<Basic>,
    /// Accept unverified certificates.
    pub insecure: bool,
    /// Extra roots (PEM), from `$HUSK_REGISTRY_CA`.
    pub extra_roots: Option<Vec<u8>>,
}

/// How requests are authenticated once the challenge is answered.
enum Auth {
    Anonymous,
    Basic(Basic),
    Bearer(String),
}

/// A registry session: a scheme that answered, and the credentials to send.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    name: String,
    registry: String,
    repository: String,
    auth: Auth,
}

/// Why [`Registry::open`] failed: transport failures may be retried over
/// plain HTTP.
pub enum OpenError {
    Transport(ImageError),
    Other(ImageError),
}

/// A body read through a cap.
enum Body {
    Whole(Vec<u8>),
    TooLarge,
}

/// Reads `resp`'s body if it holds at most `cap` bytes.
async fn read_capped(resp: &mut Response, cap: u64) -> reqwest::Result<Body> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Ok(Body::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if (buf.len() + chunk.len()) as u64 > cap {
            return Ok(Body::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body::Whole(buf))
}

/// The first [`MAX_ERROR_BODY`] bytes of an error answer (whatever arrived
/// before a transport error).
async fn read_prefix(mut resp: Response) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ERROR_BODY as usize - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() as u64 >= MAX_ERROR_BODY {
            break;
        }
    }
    buf
}

/// Short text for an error message: the first line, printable characters
/// only, at most 200 of them.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// The `errors[].code` values of an OCI error envelope.
fn envelope_codes(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
    }
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.errors.into_iter().map(|x| x.code).collect())
        .unwrap_or_default()
}

/// The realm and service of a `Bearer` challenge, if the header has one;
/// `Some(None)` for a `Basic` challenge.
fn bearer_challenge(header: &HeaderValue) -> Option<Option<(String, Option<String>)>> {
    let text = header.to_str().ok()?;
    let mut basic = false;
    for c in http_auth::parser::ChallengeParser::new(text).flatten() {
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let get = |k: &str| {
                c.params
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.to_unescaped())
            };
            if let Some(realm) = get("realm") {
                return Some(Some((realm, get("service"))));
            }
        } else if c.scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(None)
}

impl Registry {
    /// Checks that `scheme://registry/v2/` answers and takes the
    /// credentials its challenge asks for (a bearer token for the
    /// repository's pull scope, or basic auth).
    pub async fn open(cfg: &Config, scheme: &str) -> Result<Registry, OpenError> {
        let other = |message: String| {
            OpenError::Other(ImageError::Registry {
                registry: cfg.registry.clone(),
                message,
                source: None,
            })
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("husk/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .danger_accept_invalid_certs(cfg.insecure);
        if let Some(pem) = &cfg.extra_roots {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                OpenError::Other(ImageError::Usage(format!("HUSK_REGISTRY_CA: {e}")))
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| other(format!("cannot set up the HTTP client: {e}")))?;
        let mut reg = Registry {
            http,
            base: format!("{scheme}://{}", cfg.registry),
            name: cfg.name.clone(),
            registry: cfg.registry.clone(),
            repository: cfg.repository.clone(),
            auth: Auth::Anonymous,
        };
        let ping = reg
            .http
            .get(format!("{}/v2/", reg.base))
            .timeout(SMALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| OpenError::Transport(reg.request_error(e)))?;
        // A TLS server answers plain HTTP with a bare 400.
        if ping.status() == StatusCode::BAD_REQUEST {
            return Err(OpenError::Transport(
                reg.registry_error("answered HTTP 400".into()),
            ));
        }
        let challenge = ping
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(bearer_challenge);
        drop(ping);
        reg.auth = match (challenge, &cfg.basic) {
            (Some(Some((realm, service))), basic) => Auth::Bearer(
                reg.token(&realm, service.as_deref(), basic.as_ref())
                    .await
                    .map_err(OpenError::Other)?,
            ),
            (Some(None), Some(b)) => Auth::Basic(b.clone()),
            _ => Auth::Anonymous,
        };
        Ok(reg)
    }

    /// A bearer token for pulling the repository, from the challenge's realm.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        basic: Option<&Basic>,
    ) -> Result<String, ImageError> {
        let scope = format!("repository:{}:pull", self.repository);
        let mut params = vec![("scope", scope.as_str())];
        params.extend(service.map(|s| ("service", s)));
        let url = Url::parse_with_params(realm, &params)
            .map_err(|e| self.registry_error(format!("bad token realm {realm:?}: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(self.registry_error(format!("bad token realm {realm:?}")));
        }
        let mut req = self.http.get(url).timeout(SMALL_TIMEOUT);
        if let Some(b) = basic {
            req = req.basic_auth(&b.user, Some(&b.password));
        }
        let mut resp = req.send().await.map_err(|e| self.request_error(e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = read_prefix(resp).await;
            return Err(self.registry_error(
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    "the token server refused the credentials".into()
                } else {
                    format!(
                        "the token server answered HTTP {}: {}",
                        status.as_u16(),
                        excerpt(&body)
                    )
                },
            ));
        }
        let body = match read_capped(&mut resp, MAX_TOKEN).await {
            Ok(Body::Whole(b)) => b,
            Ok(Body::TooLarge) => {
                return Err(self.registry_error(format!(
                    "the token answer is larger than the limit of {MAX_TOKEN} bytes"
                )))
            }
            Err(e) => return Err(self.request_error(e)),
        };
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| self.registry_error(format!("the token answer is malformed: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| HeaderValue::from_str(&format!("Bearer {t}")).is_ok())
            .ok_or_else(|| self.registry_error("the token answer holds no usable token".into()))
    }

    /// A GET of `path` under the repository, authenticated.
    async fn get(&self, path: &str) -> Result<Response, ImageError> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        let req = self.http.get(url);
        let req = match &self.auth {
            Auth::Anonymous => req,
            Auth::Basic(b) => req.basic_auth(&b.user, Some(&b.password)),
            Auth::Bearer(t) => req.bearer_auth(t),
        };
        let req = if path.starts_with("manifests/") {
            req.header(ACCEPT, super::registry::ACCEPT.join(", "))
                .timeout(SMALL_TIMEOUT)
        } else {
            req
        };
        let resp = req.send().await.map_err(|e| self.request_error(e))?;
        if resp.status() == StatusCode::OK {
            return Ok(resp);
        }
        Err(self.refusal(resp, path).await)
    }

    /// The manifest `reference` (a tag or a digest), at most [`MAX_JSON`]
    /// bytes, with the digest the registry states for it (if it does).
    pub async fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>), ImageError> {
        self.manifest_capped(reference, MAX_JSON)
            .await?
            .ok_or_else(|| {
                ImageError::Malformed(format!(
                    "{}: the manifest is larger than the limit of {MAX_JSON} bytes",
                    self.name
                ))
            })
    }

    /// Like [`Registry::manifest`] with a smaller cap; `None` when the
    /// manifest is larger than `cap` (not one byte past it is read).
    pub async fn manifest_capped(
        &self,
        reference: &str,
        cap: u64,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, ImageError> {
        let mut resp = self.get(&format!("manifests/{reference}")).await?;
        let stated = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match read_capped(&mut resp, cap).await {
            Ok(Body::Whole(b)) => Ok(Some((b, stated))),
            Ok(Body::TooLarge) => Ok(None),
            Err(e) => Err(self.request_error(e)),
        }
    }

    /// A small blob read whole, or `None` when it is larger than `cap`.
    pub async fn small_blob(&self, digest: &str, cap: u64) -> Result<Option<Vec<u8>>, ImageError> {
        let mut resp = self.blob(digest).await?;
        match read_capped(&mut resp, cap).await {
            Ok(Body::Whole(b)) => Ok(Some(b)),
            Ok(Body::TooLarge) => Ok(None),
            Err(e) => Err(self.request_error(e)),
        }
    }

    /// The blob `digest`, its body still to be read (by the caller, who
    /// bounds it by the size its descriptor announces).
    pub async fn blob(&self, digest: &str) -> Result<Response, ImageError> {
        self.get(&format!("blobs/{digest}")).await
    }

    /// An error answer (not 200) turned into an error, reading at most
    /// [`MAX_ERROR_BODY`] of its body.
    async fn refusal(&self, resp: Response, path: &str) -> ImageError {
        let status = resp.status();
        let body = read_prefix(resp).await;
        let codes = envelope_codes(&body);
        let has = |names: &[&str]| codes.iter().any(|c| names.contains(&c.as_str()));
        let name = &self.name;
        if status == StatusCode::NOT_FOUND
            || has(&[
                "MANIFEST_UNKNOWN",
                "NAME_UNKNOWN",
                "NOT_FOUND",
                "BLOB_UNKNOWN",
            ])
        {
            return ImageError::NotInRegistry(match path.strip_prefix("blobs/") {
                Some(d) => format!("{name}: blob {d} not found in the registry"),
                None => format!("{name}: not found in the registry"),
            });
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            || has(&["UNAUTHORIZED", "DENIED"])
        {
            return self.registry_error(format!(
                "access to {name} denied (wrong or missing credentials?)"
            ));
        }
        self.registry_error(format!(
            "answered HTTP {}: {}",
            status.as_u16(),
            excerpt(&body)
        ))
    }

    pub fn request_error(&self, e: reqwest::Error) -> ImageError {
        let what = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        ImageError::Registry {
            registry: self.registry.clone(),
            message: what.to_string(),
            source: Some(Box::new(e)),
        }
    }

    pub fn registry_error(&self, message: String) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            message,
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            bearer_challenge(&h(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="x""#
            )),
            Some(Some((
                "https://auth.example/token".to_string(),
                Some("registry.example".to_string())
            )))
        );
        assert_eq!(bearer_challenge(&h(r#"Basic realm="r""#)), Some(None));
        assert_eq!(bearer_challenge(&h("Negotiate")), None);
    }

    #[test]
    fn error_text_is_one_short_line() {
        let long = format!("first\u{1b}[31m line{}\nsecond", "x".repeat(1000));
        let e = excerpt(long.as_bytes());
        assert!(e.starts_with("first[31m line"));
        assert_eq!(e.chars().count(), 200);
        assert_eq!(
            envelope_codes(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"m"}]}"#),
            ["MANIFEST_UNKNOWN"]
        );
        assert!(envelope_codes(b"<html>").is_empty());
    }
}
