//! Retry with exponential backoff and full jitter, only for errors the provider marks retryable.

use std::future::Future;
use std::time::Duration;

use kprov_providers::CloudError;
use rand::Rng;

/// How to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    /// First backoff.
    pub base: Duration,
    /// Backoff cap.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(200),
            max: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `n` (1-based): a random duration in `[0, min(max, base·2ⁿ⁻¹)]`.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
        let cap = exp.min(self.max);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=ms)
        })
    }
}

/// Run `f` until it succeeds, fails with a non-retryable error, or attempts run out.
/// Returns the value (or the last error) and the number of retries made.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut f: F,
) -> Result<(T, usize), (CloudError, usize)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CloudError>>,
{
    let mut retries = 0usize;
    loop {
        match f().await {
            Ok(v) => return Ok((v, retries)),
            Err(e) if e.is_retryable() && (retries as u32 + 1) < policy.attempts => {
                retries += 1;
                let d = policy.backoff(retries as u32);
                tracing::warn!("{what}: {e}; retry {retries} in {:.1}s", d.as_secs_f64());
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err((e, retries)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(400),
        };
        for n in 1..10 {
            assert!(p.backoff(n) <= Duration::from_millis(400));
        }
        let spread: std::collections::BTreeSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(spread.len() > 5, "jitter must spread retries");
    }
}
