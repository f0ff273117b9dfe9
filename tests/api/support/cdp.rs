//! Headless Chromium driven over the DevTools protocol, through the pipe Chromium opens
//! with `--remote-debugging-pipe` (its fds 3 and 4: NUL-terminated JSON messages), so
//! no websocket client is needed.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Longest a protocol call or a page condition may take.
const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Reports every Content-Security-Policy violation as a console error, on every page,
/// before the page's own scripts run.
const REPORT_CSP_VIOLATIONS: &str = "document.addEventListener('securitypolicyviolation', \
     (e) => console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));";

/// One page of a headless Chromium, and every event the browser sent so far.
pub struct Browser {
    child: Child,
    to_browser: ChildStdin,
    replies: Receiver<Value>,
    events: Arc<Mutex<Vec<Value>>>,
    next_id: u64,
    session: Option<String>,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium without network access of its own or kept state, opens a page
    /// and enables the page, runtime and log domains on it.
    pub fn start(chromium: &Path, width: u32, height: u32) -> Self {
        let profile = tempfile::tempdir().unwrap();
        // The shell hands the child's stdin and stdout to Chromium as fds 3 and 4.
        let mut child = Command::new("sh")
            .args(["-c", "exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null"])
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        let to_browser = child.stdin.take().expect("stdin is piped");
        let from_browser = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (reply, replies) = mpsc::channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        std::thread::spawn(move || {
            for message in from_browser.split(0).map_while(Result::ok) {
                let Ok(message) = serde_json::from_slice::<Value>(&message) else { continue };
                if message.get("id").is_some() {
                    let _ = reply.send(message);
                } else {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).push(message);
                }
            }
        });
        let mut browser =
            Self { child, to_browser, replies, events, next_id: 0, session: None, _profile: profile };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached =
            browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        browser.session = attached["sessionId"].as_str().map(str::to_owned);
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call("Page.addScriptToEvaluateOnNewDocument", json!({"source": REPORT_CSP_VIOLATIONS}));
        browser
    }

    /// Sends a command (to the page once attached) and returns its result; a protocol
    /// error fails the test.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).map_err(|e| format!("writing to chromium: {e}"))?;
        let give_up = Instant::now() + TIMEOUT;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            let reply = self.replies.recv_timeout(left).map_err(|_| "chromium did not answer".to_owned())?;
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
    }

    /// The value of a script run in the page (awaited when it is a promise).
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.try_call("Runtime.evaluate", params)?;
        match result.get("exceptionDetails") {
            Some(thrown) => Err(thrown.to_string()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Opens `url` and waits until the document it leads to (after any redirect) has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.act("window.leaving = true");
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("window.leaving === undefined && document.readyState === 'complete'");
    }

    /// Polls `condition` in the page until it holds; a page that is loading meanwhile
    /// (no context to run it in) counts as not yet.
    pub fn wait_for(&mut self, condition: &str) {
        let give_up = Instant::now() + TIMEOUT;
        while self.eval(condition) != Ok(Value::Bool(true)) {
            if Instant::now() > give_up {
                let page = self.eval("location.href + '\\n' + document.body.innerText");
                panic!("never true: {condition}\non {page:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs a script that acts on the page (fills a field, clicks), failing the test if
    /// it throws.
    pub fn act(&mut self, script: &str) {
        self.eval(script).unwrap_or_else(|error| panic!("{script}: {error}"));
    }

    /// Console errors, uncaught exceptions and error log entries (CSP violations among
    /// them) the page has produced so far.
    pub fn problems(&self) -> Vec<Value> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let is_problem = |event: &&Value| {
            let params = &event["params"];
            match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => true,
                Some("Runtime.consoleAPICalled") => {
                    matches!(params["type"].as_str(), Some("error" | "assert"))
                }
                Some("Log.entryAdded") => params["entry"]["level"] == "error",
                _ => false,
            }
        };
        events.iter().filter(is_problem).cloned().collect()
    }
}

impl Drop for Browser {
    /// Closes the browser as a user would, so that it takes its helper processes along;
    /// kills it if it does not go.
    fn drop(&mut self) {
        self.session = None;
        let _ = self.try_call("Browser.close", json!({}));
        let give_up = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < give_up {
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
