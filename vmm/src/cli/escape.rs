//! Control characters made visible in text husk prints on its own behalf.
//!
//! Some of what husk prints comes from outside: an agent's error message,
//! a pod's failure reason that quotes one, a registry's error body, an
//! image name from an imported archive. A compromised guest or a hostile
//! registry could put terminal escape sequences there (security review F8)
//! and, through `husk ps`, an error line or a pull failure, move the
//! operator's cursor, retitle the window, rewrite earlier lines, or (with
//! `\r`) forge a line that looks like husk's own. Every such string goes
//! through [`escape`] before it is printed: C0 controls (tab excepted,
//! which only moves the cursor right), DEL and C1 controls come out as
//! `\x1b`-style escapes, so the text stays readable and can do nothing.
//!
//! Apps' own output (attached stdio, `husk logs`, `husk exec`) is left raw,
//! as Docker leaves it: it is the app's terminal session, colours and
//! cursor movement included. JSON output (`--json`, `inspect`) is left to
//! the JSON encoder, which escapes C0 controls itself.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is shown escaped.
fn is_control(c: char) -> bool {
    c != '\t' && (c.is_ascii_control() || ('\u{80}'..='\u{9f}').contains(&c))
}

/// `text` with each control character but tab replaced by a visible
/// escape: `\x1b` for C0 and DEL, `\u{9b}` for C1. Borrowed when there is
/// nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_control(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_made_visible() {
        assert!(matches!(escape("plain text, ünïcode"), Cow::Borrowed(_)));
        assert_eq!(escape("tab\tstays"), "tab\tstays");
        assert_eq!(
            escape("\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(escape("a\rb | forged\n"), "a\\x0db | forged\\x0a");
        assert_eq!(escape("\0\x7f"), "\\x00\\x7f");
        // C1: U+009B is CSI on terminals that take 8-bit controls.
        assert_eq!(escape("\u{9b}31m\u{85}"), "\\u{9b}31m\\u{85}");
        assert_eq!(escape("\u{a0}é"), "\u{a0}é");
    }

    #[test]
    fn nothing_left_for_a_terminal_to_act_on() {
        let hostile: String = (0u32..0x200).filter_map(char::from_u32).collect();
        let shown = escape(&hostile);
        assert!(!shown.chars().any(is_control));
        assert!(shown.contains('\t'));
    }
}
