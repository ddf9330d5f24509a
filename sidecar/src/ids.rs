//! Names the sidecar gives: capture ids and failure ids (one tame path segment each, since they
//! become directory names, object keys and snapshot names), and manifest dates.

use std::time::SystemTime;

/// `2026-11-28T02:15:00Z`: UTC, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    // A clock before 1970 or past year 9999 is broken: say the epoch rather than fail a capture.
    let t = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The id of a capture taken at `at`: `<stamp>-<process>-<pid>-<trigger>`, e.g.
/// `20261128T021500Z-Orders-42-onDemand`.
pub fn capture_id(at: SystemTime, process: &str, pid: u32, trigger: api::TriggerKind) -> String {
    let stamp: String = rfc3339(at).chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    segment(&format!("{stamp}-{process}-{pid}-{trigger}"))
}

/// One path segment of `[A-Za-z0-9._-]`, at most 128 characters, not hidden: what the operator
/// takes as a capture id or file name (it becomes part of an object key). Process names may not
/// be that tame.
pub fn segment(raw: &str) -> String {
    let s: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    let s = s.trim_start_matches('.');
    let s = if s.is_empty() { "capture" } else { s };
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_832_100_250);
        assert_eq!(rfc3339(t), "2026-11-28T02:15:00Z");
    }

    #[test]
    fn capture_ids_become_one_tame_path_segment() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_832_100);
        assert_eq!(capture_id(t, "Orders", 42, api::TriggerKind::OnDemand), "20261128T021500Z-Orders-42-onDemand");
        assert_eq!(capture_id(t, "Shop+Api/ü", 42, api::TriggerKind::Cpu), "20261128T021500Z-Shop-Api---42-cpu");
        assert_eq!(segment("..hidden"), "hidden");
        assert_eq!(segment(""), "capture");
        assert_eq!(segment(&"x".repeat(300)).len(), 128);
    }
}
