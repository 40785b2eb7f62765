//! Text made safe to print on a terminal, for every command that prints user input.

/// `text` with control characters escaped (`\n`, `\u{1b}`), so names and titles cannot forge
/// lines or drive the terminal.
pub fn terminal_safe(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}
