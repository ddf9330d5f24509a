//! Type names as dotnet-gcdump shows them.
//!
//! `BulkType` events carry reflection-style names such as
//! ``System.Collections.Generic.Dictionary`2[System.String,System.Int32]``; dotnet-gcdump
//! rewrites them to `System.Collections.Generic.Dictionary<System.String,System.Int32>`.
//! Matching its output keeps our reports comparable with the tool people already know.

/// dotnet-gcdump's cleanup: drop generic arity markers (`` `\d+ ``), turn `[`/`]` into
/// `<`/`>`, except an empty `[]`, which stays (so arrays stay `T[]`).
///
/// Faithful to the reference, quirks included (a multi-dimensional array `T[,]` becomes
/// `T<,>`, and a backtick not followed by a digit is kept), with one deliberate difference:
/// the reference swaps every `<>` of the result back to `[]`, which also mangles the `<>` of
/// compiler-generated names (`Outer+<>c__DisplayClass3_0`, the closures a leak finding names);
/// here only brackets that were brackets become `[]`.
pub fn clean_type_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if chars.peek().is_some_and(char::is_ascii_digit) => {
                while chars.next_if(char::is_ascii_digit).is_some() {}
            }
            '[' if chars.next_if_eq(&']').is_some() => out.push_str("[]"),
            '[' => out.push('<'),
            ']' => out.push('>'),
            _ => out.push(c),
        }
    }
    out
}

/// Name for a type id no `BulkType` event described (dotnet-gcdump's `Type(0x…)` form).
pub fn unknown_type_name(type_id: u64) -> String {
    format!("Type({type_id:#x})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_arity_is_stripped_and_brackets_become_angles() {
        assert_eq!(
            clean_type_name("System.Collections.Generic.Dictionary`2[System.String,System.Int32]"),
            "System.Collections.Generic.Dictionary<System.String,System.Int32>"
        );
        assert_eq!(
            clean_type_name("System.Collections.Generic.List`1[Shop.Customer]"),
            "System.Collections.Generic.List<Shop.Customer>"
        );
    }

    #[test]
    fn arrays_keep_square_brackets() {
        assert_eq!(clean_type_name("System.String[]"), "System.String[]");
        assert_eq!(
            clean_type_name("System.Collections.Generic.List`1[System.Byte[]][]"),
            "System.Collections.Generic.List<System.Byte[]>[]"
        );
        // Reference quirk, kept on purpose.
        assert_eq!(clean_type_name("System.Int32[,]"), "System.Int32<,>");
    }

    #[test]
    fn compiler_generated_names_keep_their_angle_brackets() {
        assert_eq!(clean_type_name("App.Sessions+<>c__DisplayClass1_0"), "App.Sessions+<>c__DisplayClass1_0");
        assert_eq!(clean_type_name("App.Sessions+<>c__DisplayClass1_0[]"), "App.Sessions+<>c__DisplayClass1_0[]");
        assert_eq!(clean_type_name("List`1[App.X+<>c]"), "List<App.X+<>c>");
    }

    #[test]
    fn nested_generics_and_multi_digit_arity() {
        assert_eq!(clean_type_name("A`12[B`1[C],D]+Inner`1[E]"), "A<B<C>,D>+Inner<E>");
    }

    #[test]
    fn plain_names_and_lone_backticks_are_untouched() {
        assert_eq!(clean_type_name("System.String"), "System.String");
        assert_eq!(clean_type_name("Odd`Name"), "Odd`Name");
        assert_eq!(clean_type_name(""), "");
    }

    #[test]
    fn cleaning_is_idempotent() {
        for raw in ["Dictionary`2[String,List`1[Int32][]]", "String[]", "X[,]"] {
            let once = clean_type_name(raw);
            assert_eq!(clean_type_name(&once), once);
        }
    }

    #[test]
    fn unknown_types_are_named_by_id() {
        assert_eq!(unknown_type_name(0x7f12_3456), "Type(0x7f123456)");
    }
}
