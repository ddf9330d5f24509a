//! DAC type names (`List`1[[DiagScenarios.Customer, DiagScenarios]]`) turned into the form
//! people read and dotnet-gcdump prints (`List<DiagScenarios.Customer>`): generic arguments
//! lose their assembly qualification and arity markers, arrays keep `[]`.

/// Simplifies one DAC type name; anything it cannot parse is returned unchanged.
pub fn simplify_type_name(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    match parse(&chars, 0) {
        Some((s, end)) if end == chars.len() => s,
        _ => raw.to_string(),
    }
}

/// Parses a type at `i`; returns it and the index after it.
fn parse(c: &[char], mut i: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    while i < c.len() && !matches!(c[i], '[' | ']' | ',') {
        if c[i] == '`' {
            // Arity marker: the arguments follow in brackets.
            i += 1;
            while i < c.len() && c[i].is_ascii_digit() {
                i += 1;
            }
            continue;
        }
        out.push(c[i]);
        i += 1;
    }
    // Generic arguments: [[T1, Asm],[T2, Asm]]
    if i + 1 < c.len() && c[i] == '[' && c[i + 1] == '[' {
        i += 1;
        let mut args = Vec::new();
        loop {
            if c.get(i) != Some(&'[') {
                return None;
            }
            let (arg, next) = parse(c, i + 1)?;
            i = next;
            // Skip ", Assembly, Version=…" up to this argument's closing bracket.
            let mut depth = 0;
            while i < c.len() {
                match c[i] {
                    '[' => depth += 1,
                    ']' if depth == 0 => break,
                    ']' => depth -= 1,
                    _ => {}
                }
                i += 1;
            }
            i += 1; // the argument's ']'
            args.push(arg);
            match c.get(i) {
                Some(',') => i += 1,
                Some(']') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
        out.push('<');
        out.push_str(&args.join(","));
        out.push('>');
    }
    // Array suffixes: [] or [,]
    while i < c.len() && c[i] == '[' && matches!(c.get(i + 1), Some(']' | ',')) {
        while i < c.len() && c[i] != ']' {
            out.push(c[i]);
            i += 1;
        }
        out.push(']');
        i += 1;
    }
    Some((out, i))
}

#[cfg(test)]
mod tests {
    use super::simplify_type_name as s;

    #[test]
    fn dac_names_become_readable() {
        assert_eq!(s("DiagScenarios.Customer"), "DiagScenarios.Customer");
        assert_eq!(s("DiagScenarios.Customer[]"), "DiagScenarios.Customer[]");
        assert_eq!(
            s("System.Collections.Generic.List`1[[DiagScenarios.Customer, .DiagScenarios.4452]]"),
            "System.Collections.Generic.List<DiagScenarios.Customer>"
        );
        assert_eq!(
            s(
                "System.Collections.Generic.Dictionary`2[[System.String, System.Private.CoreLib],[System.Collections.Generic.List`1[[System.Int32, System.Private.CoreLib]], System.Private.CoreLib]][]"
            ),
            "System.Collections.Generic.Dictionary<System.String,System.Collections.Generic.List<System.Int32>>[]"
        );
        assert_eq!(s("System.Int32[,]"), "System.Int32[,]");
        assert_eq!(s("Free"), "Free");
        assert_eq!(s("broken[[x"), "broken[[x");
    }
}
