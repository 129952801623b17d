//! Device fault injection, a test hook: `WEFT_INJECT_FAULTS` makes chosen batches of every
//! model's worker fail, panic or hang inside the device call, so that the tests can check
//! what clients, readiness and the process do when a real device does that.
//!
//! The value is a comma-separated list of events, each naming batches by their 1-based count
//! in one worker (warm-up runs not counted):
//!
//! - `fail@N` or `fail@N-M`: the device call returns an error on batch N (to M)
//! - `panic@N`: the device call panics on batch N
//! - `hang@N:MS`: batch N takes MS milliseconds longer (past `--device-timeout`, a hang)
//!
//! Unset or empty, nothing is injected. A malformed value is a setup error, so that a test
//! never runs without the faults it asked for.

use std::time::Duration;

/// The environment variable the hook reads.
pub const ENV: &str = "WEFT_INJECT_FAULTS";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Fail,
    Panic,
    Hang(Duration),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    events: Vec<(u64, u64, Fault)>,
}

impl FaultPlan {
    /// The plan from `WEFT_INJECT_FAULTS` (empty when unset).
    pub fn from_env() -> Result<FaultPlan, String> {
        match std::env::var(ENV) {
            Ok(v) => FaultPlan::parse(&v).map_err(|e| format!("{ENV}: {e}")),
            Err(_) => Ok(FaultPlan::default()),
        }
    }

    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut events = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (kind, at) = item
                .split_once('@')
                .ok_or_else(|| format!("'{item}': expected KIND@BATCH"))?;
            let (range, arg) = match at.split_once(':') {
                Some((r, a)) => (r, Some(a)),
                None => (at, None),
            };
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (batch_number(a)?, batch_number(b)?),
                None => {
                    let n = batch_number(range)?;
                    (n, n)
                }
            };
            if hi < lo {
                return Err(format!("'{item}': the range ends before it starts"));
            }
            let fault = match (kind, arg) {
                ("fail", None) => Fault::Fail,
                ("panic", None) => Fault::Panic,
                ("hang", Some(ms)) => Fault::Hang(Duration::from_millis(
                    ms.parse()
                        .map_err(|_| format!("'{item}': '{ms}' is not milliseconds"))?,
                )),
                ("hang", None) => return Err(format!("'{item}': hang needs :MILLISECONDS")),
                _ => return Err(format!("'{item}': unknown fault (fail, panic, hang)")),
            };
            events.push((lo, hi, fault));
        }
        Ok(FaultPlan { events })
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The fault for batch `n` (1-based), if any.
    pub fn at(&self, n: u64) -> Option<&Fault> {
        self.events
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&n))
            .map(|(_, _, f)| f)
    }
}

fn batch_number(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a batch number (1, 2, ...)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_ranges() {
        let p = FaultPlan::parse("fail@2, panic@5,hang@7:1500,fail@10-12").unwrap();
        assert_eq!(p.at(1), None);
        assert_eq!(p.at(2), Some(&Fault::Fail));
        assert_eq!(p.at(5), Some(&Fault::Panic));
        assert_eq!(p.at(7), Some(&Fault::Hang(Duration::from_millis(1500))));
        assert_eq!(p.at(11), Some(&Fault::Fail));
        assert_eq!(p.at(13), None);
        assert!(FaultPlan::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in [
            "fail",
            "fail@0",
            "fail@x",
            "hang@3",
            "hang@3:soon",
            "boom@1",
            "fail@5-2",
        ] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }
}
