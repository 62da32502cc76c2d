//! Secret input: a prompt on the terminal with echo off (unseal key shares, passwords), or one
//! line from standard input when it is not a terminal, as `vault` reads them.
//!
//! Guarantees: echo is switched back on however the read ends (a guard restores the terminal's
//! settings); the value is returned in a zeroizing buffer, trimmed. Not guaranteed: that the
//! terminal's own scrollback or a screen recorder never saw the prompt's answer, or hiding
//! anything when the terminal refuses to change its mode (then the read fails, rather than echo).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use rustix::termios::{LocalModes, OptionalActions, Termios, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

/// Restores the terminal's settings when dropped.
struct EchoOff {
    saved: Termios,
}

impl EchoOff {
    fn new() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        // Keep the newline visible so the next output starts on its own line.
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).context("switching echo off")?;
        Ok(Self { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

fn read_line() -> Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let v = Zeroizing::new(line.trim().to_owned());
    if v.is_empty() {
        bail!("no value given on standard input");
    }
    Ok(v)
}

/// Asks for a secret with `prompt` on a terminal, without echo; reads one line otherwise.
pub(super) fn hidden(prompt: &str) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        return read_line();
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let _guard = EchoOff::new()?;
    read_line()
}

/// All of standard input, trimmed (`-` for a value: Vault reads the whole stream).
pub(super) fn stdin_all() -> Result<Zeroizing<String>> {
    let mut all = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut all)?;
    let v = Zeroizing::new(all.trim().to_owned());
    if v.is_empty() {
        bail!("no value given on standard input");
    }
    Ok(v)
}
