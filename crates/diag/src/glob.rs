//! The one glob dumpwatch matches names with: exception types (`exceptionType`), process names
//! and command lines (a trigger's `processes`), `dumpwatch exceptions --type`.

/// Whether `text` matches `pattern` whole: `*` is any run of characters (none too), `?` exactly
/// one; everything else is itself (case matters, as in type and assembly names).
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of `text` it has swallowed so far: on a mismatch, let
    // it swallow one more character (one backtrack point, no recursion: a hostile pattern or
    // command line can neither blow the stack nor take exponential time).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_question_marks_match_whole_names() {
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXXbYYbc"));
        assert!(!matches("a*b*c", "aXXbYYb"));
        assert!(matches("Orders.Ap?", "Orders.Api"));
        assert!(!matches("Orders", "Orders.Api"), "whole name, not a substring");
        assert!(!matches("orders.api", "Orders.Api"), "case-sensitive");
        let long = "a".repeat(10_000);
        assert!(!matches("*a*a*a*a*a*b", &long), "a hostile pattern ends");
    }

    #[test]
    fn globs_match_whole_exception_type_names() {
        for (p, n) in [
            ("*", "System.Exception"),
            ("*", ""),
            ("System.*Timeout*", "System.TimeoutException"),
            ("System.*Timeout*", "System.Net.Http.HttpRequestTimeoutException"),
            ("System.?ut", "System.Out"),
            ("*Exception", "App.BoomException"),
            ("a*b*c", "aXXbYYbc"),
            ("App.E", "App.E"),
        ] {
            assert!(matches(p, n), "{p} ~ {n}");
        }
        for (p, n) in [
            ("System.*Timeout*", "System.InvalidOperationException"),
            ("System.*Timeout*", "App.TimeoutException"),
            ("App.E", "App.Ex"),
            ("App.E", "app.e"),
            ("?", ""),
            ("a*b*c", "aXXbYYbd"),
        ] {
            assert!(!matches(p, n), "{p} !~ {n}");
        }
    }
}
