//! [`ApiStats`]: an SDK interceptor counting every request sent (retries included), by action.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::BoxError;

/// API call counters shared by every client of one adapter. Cloning shares the counters.
#[derive(Debug, Clone, Default)]
pub struct ApiStats(Arc<Mutex<BTreeMap<String, u64>>>);

impl ApiStats {
    /// Requests sent so far, by action (`RunInstances`, `DescribeInstances`, ...).
    pub fn by_action(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("stats lock").clone()
    }

    /// Requests sent so far.
    pub fn total(&self) -> u64 {
        self.0.lock().expect("stats lock").values().sum()
    }

    /// Forget the counts.
    pub fn reset(&self) {
        self.0.lock().expect("stats lock").clear();
    }

    fn add(&self, action: &str) {
        *self
            .0
            .lock()
            .expect("stats lock")
            .entry(action.to_string())
            .or_default() += 1;
    }
}

/// The action of an EC2 / ELBv2 query-protocol request body (`Action=RunInstances&...`).
fn action_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(str::to_string)
        .unwrap_or_else(|| "?".into())
}

impl Intercept for ApiStats {
    fn name(&self) -> &'static str {
        "kprov-api-stats"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Only the action name is read from the body; headers (and with them the signature)
        // are never looked at, so nothing secret can leak through the counters.
        let action = ctx
            .request()
            .body()
            .bytes()
            .map(action_of)
            .unwrap_or_else(|| "?".into());
        self.add(&action);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn action_is_read_from_the_query_body() {
        assert_eq!(
            super::action_of(b"Action=RunInstances&Version=2016-11-15"),
            "RunInstances"
        );
        assert_eq!(
            super::action_of(b"Version=1&Action=DescribeTags"),
            "DescribeTags"
        );
        assert_eq!(super::action_of(b""), "?");
    }
}
