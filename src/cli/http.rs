//! Where the server is and who is asking (`--url`, `--token`, `--json`),
//! and the HTTP client the remote commands share.

use std::error::Error as StdError;
use std::str::FromStr;

use clap::Args;
use serde_json::Value;

/// Where the server is and who is asking.
#[derive(Debug, Args)]
pub struct Connection {
    /// The server's base URL; without a scheme, http:// is assumed
    /// (`127.0.0.1:8080`).
    #[arg(long, env = "POLICY_VALUES_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: ServerUrl,
    /// A bearer token (reader for reads, auditor for history and audit, admin for writes).
    #[arg(long, env = "POLICY_VALUES_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The server's base URL: as the user gave it (for messages), and with its
/// scheme (for requests).
#[derive(Debug, Clone)]
pub struct ServerUrl {
    given: String,
    base: String,
}

impl ServerUrl {
    /// The URL as the user gave it.
    pub fn given(&self) -> &str {
        &self.given
    }

    /// The URL requests are made against, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl FromStr for ServerUrl {
    type Err = String;

    /// Takes a URL without a scheme as `http://`; refuses other schemes
    /// (this build speaks no TLS), queries and fragments in words.
    fn from_str(raw: &str) -> Result<ServerUrl, String> {
        let raw = raw.trim();
        let with_scheme = match raw.contains("://") {
            true => raw.to_string(),
            false => format!("http://{raw}"),
        };
        let url = reqwest::Url::parse(&with_scheme)
            .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:8080"))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err("https is not supported: this build of the CLI speaks no TLS; \
                            reach the server over http:// on a trusted network or through a tunnel"
                    .into())
            }
            other => return Err(format!("the scheme {other}:// is not supported; use http://")),
        }
        if !url.host_str().is_some_and(|host| !host.is_empty()) {
            return Err("the URL names no host; expected e.g. http://127.0.0.1:8080".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the server's base URL takes no query or fragment".into());
        }
        Ok(ServerUrl { given: raw.to_string(), base: with_scheme.trim_end_matches('/').to_string() })
    }
}

/// Why a request got no answer, naming the URL the user gave (not the
/// endpoint's): "cannot connect to URL: connection refused; is the server
/// running?".
fn unreachable(url: &str, err: &reqwest::Error) -> String {
    let mut io = None;
    let mut innermost: &dyn StdError = err;
    while let Some(source) = innermost.source() {
        io = io.or_else(|| source.downcast_ref::<std::io::Error>());
        innermost = source;
    }
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            format!("cannot connect to {url}: connection refused; is the server running?")
        }
        _ if err.is_timeout() => format!("cannot connect to {url}: no answer in time; is the server running?"),
        _ if err.is_connect() => format!("cannot connect to {url}: {innermost}"),
        _ => format!("the request to {url} failed: {innermost}"),
    }
}

/// The server's client: sends the token, turns a refusal into an error
/// carrying the server's status, code and message.
pub(super) struct Client {
    pub(super) conn: Connection,
    pub(super) http: reqwest::Client,
}

impl Client {
    pub(super) fn new(conn: Connection) -> Client {
        let http = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10)).build();
        Client { conn, http: http.unwrap_or_default() }
    }

    /// The full URL of `path` on the server.
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.conn.url.base())
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Box<dyn std::error::Error>> {
        let req = match &self.conn.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        let response = req.send().await.map_err(|e| unreachable(self.conn.url.given(), &e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let code = body["code"].as_str().unwrap_or("error");
        let message = body["message"].as_str().unwrap_or("no message");
        let details = match &body["details"] {
            Value::Object(map) if !map.is_empty() => format!(" {}", body["details"]),
            _ => String::new(),
        };
        Err(format!("{} {code}: {message}{details}", status.as_u16()).into())
    }

    pub(super) async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, Box<dyn std::error::Error>> {
        let req = self.http.get(self.url(path)).query(query);
        self.json(self.send(req).await?).await
    }

    pub(super) async fn post(&self, path: &str, body: &Value) -> Result<Value, Box<dyn std::error::Error>> {
        let req = self.http.post(self.url(path)).json(body);
        self.json(self.send(req).await?).await
    }

    /// A success's JSON body; anything else means the URL is not ours.
    async fn json(&self, response: reqwest::Response) -> Result<Value, Box<dyn std::error::Error>> {
        let url = self.conn.url.given();
        let not_ours = |e: reqwest::Error| {
            format!("{url} answered with something other than JSON ({e}); is it a policy-values server?")
        };
        Ok(response.json().await.map_err(not_ours)?)
    }

    pub(super) fn print(&self, json: &Value, table: impl FnOnce(&Value) -> String) {
        if self.conn.json {
            println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
        } else {
            print!("{}", table(json));
        }
    }
}
