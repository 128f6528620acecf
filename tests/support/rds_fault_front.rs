//! A loopback proxy in front of the RDS endpoint (moto, or the RDS mirror in front of it) that
//! answers AWS's own error for chosen calls, then forwards: the agent's retries meet the
//! errors a real throttled or failing RDS API gives. The shapes are the Query protocol's
//! (`<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`):
//! `Throttling` / `Rate exceeded` and `RequestLimitExceeded` with HTTP 400 (type `Sender`),
//! `InternalFailure` with 500 and `ServiceUnavailable` with 503 (type `Receiver`).

use super::cloud::stand_in::{Req, Resp, StandIn};
use super::rds_mirror::forward;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Throttling,
    RequestLimitExceeded,
    Internal500,
    Unavailable503,
}

impl Fault {
    fn answer(self, n: usize) -> Resp {
        let (status, ty, code, msg) = match self {
            Fault::Throttling => (400, "Sender", "Throttling", "Rate exceeded"),
            Fault::RequestLimitExceeded => {
                (400, "Sender", "RequestLimitExceeded", "Request limit exceeded.")
            }
            Fault::Internal500 => (
                500,
                "Receiver",
                "InternalFailure",
                "The request processing has failed because of an unknown error, exception or failure.",
            ),
            Fault::Unavailable503 => (
                503,
                "Receiver",
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            ),
        };
        Resp::new(
            status,
            "text/xml",
            format!(
                "<ErrorResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\"><Error><Type>{ty}</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>7c4a6c7e-0000-4000-8000-{n:012}</RequestId></ErrorResponse>"
            ),
        )
    }
}

/// For `action`: let the first `skip` calls through, then answer `faults` in turn for the next
/// `count` calls (`usize::MAX`: for ever), then let calls through again.
#[derive(Clone, Debug)]
pub struct Rule {
    pub action: String,
    pub skip: usize,
    pub count: usize,
    pub faults: Vec<Fault>,
    seen: usize,
}

impl Rule {
    pub fn new(action: &str, skip: usize, count: usize, faults: &[Fault]) -> Rule {
        Rule {
            action: action.into(),
            skip,
            count,
            faults: faults.to_vec(),
            seen: 0,
        }
    }
}

#[derive(Default)]
pub struct FrontState {
    rules: Vec<Rule>,
    /// Every call as (Action, the fault answered or None when forwarded, when), in order.
    pub calls: Vec<(String, Option<Fault>, Instant)>,
}

pub struct FaultFront {
    pub server: StandIn,
    pub state: Arc<Mutex<FrontState>>,
}

impl FaultFront {
    /// Forwards to `upstream_port` on 127.0.0.1 (Host and signature unchanged).
    pub fn start(upstream_port: u16, rules: Vec<Rule>) -> FaultFront {
        let state = Arc::new(Mutex::new(FrontState {
            rules,
            calls: Vec::new(),
        }));
        let st = state.clone();
        let server = StandIn::start(move |req: &Req| {
            let action = req.form().get("Action").cloned().unwrap_or_default();
            let fault = {
                let mut s = st.lock().unwrap();
                let n = s.calls.len();
                let f = s
                    .rules
                    .iter_mut()
                    .find(|r| r.action == action)
                    .and_then(|r| {
                        r.seen += 1;
                        let i = r.seen - 1;
                        (i >= r.skip && i - r.skip < r.count && !r.faults.is_empty())
                            .then(|| r.faults[(i - r.skip) % r.faults.len()])
                    });
                s.calls.push((action, f, Instant::now()));
                f.map(|f| (f, n))
            };
            match fault {
                Some((f, n)) => f.answer(n),
                None => forward(upstream_port, req),
            }
        });
        FaultFront { server, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// (forwarded, injected) calls of `action`.
    pub fn counts(&self, action: &str) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        let of = s.calls.iter().filter(|(a, _, _)| a == action);
        let injected = of.clone().filter(|(_, f, _)| f.is_some()).count();
        (of.count() - injected, injected)
    }

    /// The injected answers: (Action, fault, when).
    pub fn injected(&self) -> Vec<(String, Fault, Instant)> {
        let s = self.state.lock().unwrap();
        s.calls
            .iter()
            .filter_map(|(a, f, t)| f.map(|f| (a.clone(), f, *t)))
            .collect()
    }
}
