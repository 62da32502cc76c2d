//! Docs that stay true: the shell blocks the guides mark as runnable are run, in order, against a
//! fresh real server, so a doc change that breaks a copy-paste fails the suite.
//!
//! The convention (docs/getting-started.md ends with a one-line pointer to it):
//! - A ```` ```sh ```` block is run when the line right before it is `<!-- runnable -->`. Other
//!   blocks are not: they build or install, start a server in the foreground, need `sudo` and
//!   system paths, prompt, or need something the box does not have (a cluster, a database).
//!   Interactive steps have a non-interactive variant next to them, and that one is marked.
//!   `<!-- not runnable: REASON -->` says why a step of the path is left out (getting-started
//!   §5); any other comment with "run" in it is refused, so a typo cannot drop a block silently.
//! - The marked blocks of a guide sequence run in one `bash` (`set -euo pipefail`), so variables
//!   carry from block to block as they do in a reader's terminal, in one temporary HOME and
//!   working directory, with the binary under test on `PATH` as `coffer`, stdin from /dev/null.
//! - What is compared: every command's exit status (0 unless its comment says otherwise); a
//!   command whose trailing comment is `# prints X` must print exactly X on stdout (trimmed,
//!   quotes around X removed); one whose comment has `Error: MSG` must fail and say MSG; one whose
//!   comment says `exits N` must exit with N (and, with `prints "X"` too, say X on stdout or
//!   stderr). A one-command block marked `<!-- runnable, output shown -->` must print what the
//!   fenced block after it shows, once tokens, request ids, times, HMACs and accessors are
//!   replaced by placeholders and column padding is collapsed ([`normalize`]). Other shown
//!   output (after blocks of several commands, or with counts that vary) is not compared.
//!
//! Two sequences, each on its own server:
//! - getting-started §2–§4 on `coffer server -dev` (the §2 `export` block names a token from the
//!   banner, so the test exports this server's address and root token instead);
//! - getting-started §5, then auth.md, leases.md, audit.md and database.md (the blocks that need
//!   no PostgreSQL), on a TLS server with its own CA.
//!   §5.1–§5.6 need root, a system user, /etc and the share holders, so the test does their
//!   equivalent: a TLS listener with a test CA in `COFFER_CACERT`, `COFFER_ADDR` exported,
//!   initialized with 5 shares and a threshold of 3, unsealed with 3, and the root token saved
//!   by `coffer login -` as §5.7 says; then §5.7's audit step, a file device at `file/`.
//!   The server and the reader run as one user: `sudo` on the reader's PATH runs its command
//!   (dropping `-u USER` and `-E`), and the system directory `/var/log/coffer` of the guides is
//!   replaced, in the command text, by a directory in the test's temporary directory.
//!
//! A failure names the guide, the line of the command and the command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{BIN, Server, tempdir};

/// One command of a runnable block: its first line number in the guide and its text (continued
/// lines and heredoc bodies included).
#[derive(Debug, PartialEq)]
struct DocCommand {
    line: usize,
    text: String,
}

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    commands: Vec<DocCommand>,
    /// With [`SHOWN`]: the output the guide shows in the fenced block that follows.
    shown: Option<String>,
}

const MARK: &str = "<!-- runnable -->";
/// A runnable block of one command whose output the guide shows in the next fenced block: the
/// test compares the two after [`normalize`].
const SHOWN: &str = "<!-- runnable, output shown -->";
/// Says why a block is not run: for readers and reviewers; the test only checks it has a reason.
const SKIP: &str = "<!-- not runnable:";

/// The runnable blocks of `markdown`, with their line numbers (1-based).
fn runnable_blocks(file: &str, markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if l.starts_with("<!--") && l.to_lowercase().contains("run") && l != MARK && l != SHOWN {
            let reason = l
                .strip_prefix(SKIP)
                .and_then(|r| r.strip_suffix("-->"))
                .map(str::trim)
                .unwrap_or_default();
            assert!(
                !reason.is_empty(),
                "{file}:{}: write {MARK}, or {SKIP} REASON -->, not {l}",
                i + 1
            );
        }
        if l == MARK || l == SHOWN {
            let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
            assert!(
                fence == "```sh" || fence == "```bash",
                "{file}:{}: {MARK} must be followed by a ```sh block",
                i + 1
            );
            let start = i + 2;
            let mut end = start;
            while end < lines.len() && lines[end].trim() != "```" {
                end += 1;
            }
            assert!(end < lines.len(), "{file}:{}: unterminated block", i + 2);
            let commands = split_commands(&lines[start..end], start + 1);
            let shown = (l == SHOWN).then(|| {
                assert_eq!(commands.len(), 1, "{file}:{}: {SHOWN} needs one command", i + 1);
                let mut o = end + 1;
                while o < lines.len() && lines[o].trim().is_empty() {
                    o += 1;
                }
                assert!(
                    lines.get(o).is_some_and(|f| f.starts_with("```") && *f != "```sh"),
                    "{file}:{}: {SHOWN} must be followed by the output's fenced block",
                    i + 1
                );
                let body: Vec<&str> =
                    lines[o + 1..].iter().take_while(|l| l.trim() != "```").copied().collect();
                body.join("\n")
            });
            blocks.push(Block { file: file.to_owned(), line: start + 1, commands, shown });
            i = end;
        }
        i += 1;
    }
    blocks
}

/// Splits a block into commands: a line ending in `\` continues on the next; a heredoc's body
/// and terminator belong to the line that opened it. Blank and comment-only lines are dropped.
fn split_commands(lines: &[&str], first_line: usize) -> Vec<DocCommand> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            i += 1;
            continue;
        }
        let number = first_line + i;
        let mut text = line.to_owned();
        while text.ends_with('\\') && i + 1 < lines.len() {
            i += 1;
            text.push('\n');
            text.push_str(lines[i]);
        }
        if let Some(word) = heredoc_word(&text) {
            while i + 1 < lines.len() {
                i += 1;
                text.push('\n');
                text.push_str(lines[i]);
                if lines[i] == word {
                    break;
                }
            }
        }
        out.push(DocCommand { line: number, text });
        i += 1;
    }
    out
}

/// The terminator of a heredoc opened on `line` (`<<'EOF'`, `<<EOF`, `<<-"EOF"`).
fn heredoc_word(line: &str) -> Option<String> {
    let rest = line.split("<<").nth(1)?;
    let rest = rest.trim_start_matches('-').trim_matches(|c| c == '\'' || c == '"' || c == ' ');
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!word.is_empty()).then_some(word)
}

/// The trailing `# comment` of a one-line command (outside quotes), and the command before it.
fn trailing_comment(text: &str) -> Option<(&str, &str)> {
    if text.contains('\n') {
        return None;
    }
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => {
                return Some((text[..i].trim_end(), text[i + 1..].trim()));
            }
            _ => {}
        }
        prev = c;
    }
    None
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
}

/// What the doc says a command does, from its trailing comment.
#[derive(Debug, PartialEq)]
enum Expect {
    Success,
    Prints(String),
    Fails { status: Option<u8>, says: Option<String> },
}

fn expectation(comment: &str) -> Expect {
    let exits = comment.split("exits ").nth(1).and_then(|r| {
        r.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u8>().ok()
    });
    if let Some(msg) = comment.split("Error: ").nth(1) {
        return Expect::Fails { status: exits, says: Some(msg.trim().to_owned()) };
    }
    let printed = comment
        .strip_prefix("prints ")
        .map(|p| unquote(p.split(", exits").next().unwrap_or(p).trim()).to_owned());
    match (exits, printed) {
        (Some(0), Some(p)) | (None, Some(p)) => Expect::Prints(p),
        (Some(n), says) => Expect::Fails { status: Some(n), says },
        (None, None) => Expect::Success,
    }
}

/// The bash for one command: run it, and check what the doc says about it.
fn script_for(block: &Block, cmd: &DocCommand) -> String {
    let first = cmd.text.lines().next().unwrap_or_default();
    let at = sh_quote(&format!("{}:{}: {first}", block.file, cmd.line));
    let mut s = format!("__at={at}\n");
    let Some((command, comment)) = trailing_comment(&cmd.text) else {
        s.push_str(&cmd.text);
        s.push('\n');
        return s;
    };
    match expectation(comment) {
        Expect::Success => {
            s.push_str(&cmd.text);
            s.push('\n');
        }
        Expect::Prints(want) => {
            s.push_str(&format!(
                "__out=$({command})\n[ \"$__out\" = {w} ] || __fail \"prints $(printf %q \"$__out\"), the doc says \"{w}\n",
                w = sh_quote(&want)
            ));
        }
        Expect::Fails { status, says } => {
            s.push_str(&format!("__rc=0; __out=$({command} 2>&1) || __rc=$?\n"));
            s.push_str("[ \"$__rc\" != 0 ] || __fail \"succeeded, the doc says it fails\"\n");
            if let Some(n) = status {
                s.push_str(&format!(
                    "[ \"$__rc\" = {n} ] || __fail \"exited $__rc, the doc says {n}: $__out\"\n"
                ));
            }
            if let Some(msg) = says {
                s.push_str(&format!(
                    "case \"$__out\" in *{m}*) ;; *) __fail \"said $(printf %q \"$__out\"), the doc says \"{m} ;; esac\n",
                    m = sh_quote(&msg)
                ));
            }
        }
    }
    s
}

/// Output with what differs from run to run replaced by a placeholder: tokens (`cfs_…`,
/// `cfw_…`, `cfa_…`, and the earlier `cfs.…`),
/// UUIDs (request ids), RFC 3339 times, HMACs and token accessors (24 or 26 letters and digits);
/// column padding is collapsed, since it follows the widths.
fn normalize(text: &str) -> String {
    let word = |w: &str| -> String {
        let core = w.trim_matches(|c| c == '"' || c == ',');
        let alnum = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric());
        let kind = if core.starts_with("cfs.")
            || ["cfs_", "cfb_", "cfw_", "cfa_"].iter().any(|p| core.starts_with(p))
        {
            "<token>"
        } else if core.starts_with("hmac-sha256:") {
            "<hmac>"
        } else if core.len() == 36 && core.matches('-').count() == 4 {
            "<uuid>"
        } else if core.len() >= 20
            && core.contains('T')
            && core.ends_with('Z')
            && core.chars().all(|c| c.is_ascii_digit() || "-:.TZ".contains(c))
        {
            "<time>"
        } else if (core.len() == 24 || core.len() == 26)
            && alnum(core)
            // Random: a digit, or both cases (about 1 accessor in 70 has no digit).
            && (core.chars().any(|c| c.is_ascii_digit())
                || (core.chars().any(|c| c.is_ascii_uppercase())
                    && core.chars().any(|c| c.is_ascii_lowercase())))
        {
            "<accessor>"
        } else {
            return w.to_owned();
        };
        w.replace(core, kind)
    };
    text.lines()
        .map(|l| l.split_whitespace().map(word).collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn script(blocks: &[Block]) -> String {
    let mut s = String::from(
        "set -euo pipefail\n\
         __at=start\n\
         __fail() { printf 'DOC FAILED at %s\\n  %s\\n' \"$__at\" \"$1\" >&2; exit 1; }\n\
         trap '__rc=$?; printf \"DOC FAILED at %s\\n  exit %s from: %s\\n\" \"$__at\" \"$__rc\" \"$BASH_COMMAND\" >&2; exit $__rc' ERR\n",
    );
    for (n, b) in blocks.iter().enumerate() {
        match (&b.shown, b.commands.as_slice()) {
            (Some(_), [c]) => {
                let first = c.text.lines().next().unwrap_or_default();
                s.push_str(&format!(
                    "__at={}\n__out=$({})\nprintf '%s\\n' \"$__out\" > \"$DOC_SHOWN/{n}\"\n",
                    sh_quote(&format!("{}:{}: {first}", b.file, c.line)),
                    c.text
                ));
            }
            _ => b.commands.iter().for_each(|c| s.push_str(&script_for(b, c))),
        }
    }
    s
}

/// Compares what each [`SHOWN`] block printed with what its guide shows.
fn compare_shown(blocks: &[Block], dir: &Path) {
    for (n, b) in blocks.iter().enumerate() {
        let Some(shown) = &b.shown else { continue };
        let got = std::fs::read_to_string(dir.join(n.to_string())).expect("captured output");
        assert_eq!(
            normalize(&got),
            normalize(shown),
            "{}:{}: the output differs from what the guide shows (after normalizing)\n--- printed:\n{got}",
            b.file,
            b.line
        );
    }
}

fn guide(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Getting started's blocks before §5 (the dev server) and from §5 on (the production-like one).
fn getting_started() -> (Vec<Block>, Vec<Block>) {
    let text = guide("getting-started.md");
    let cut = text.find("\n## 5. ").expect("getting-started.md has a §5");
    let before = text[..cut].lines().count();
    let (dev, prod): (Vec<Block>, Vec<Block>) =
        runnable_blocks("getting-started.md", &text).into_iter().partition(|b| b.line <= before);
    (dev, prod)
}

/// A HOME, a working directory and a PATH whose `coffer` is the binary under test.
struct Reader {
    home: PathBuf,
    work: PathBuf,
    path: String,
}

impl Reader {
    fn new(dir: &Path) -> Reader {
        use std::os::unix::fs::PermissionsExt;
        let (home, work, bin) = (dir.join("home"), dir.join("work"), dir.join("bin"));
        for d in [&home, &work, &bin] {
            std::fs::create_dir_all(d).expect("dir");
        }
        std::os::unix::fs::symlink(BIN, bin.join("coffer")).expect("symlink coffer");
        let sudo = bin.join("sudo");
        std::fs::write(
            &sudo,
            "#!/bin/bash\nwhile [ $# -gt 0 ]; do case \"$1\" in -E) shift ;; -u) shift 2 ;; *) break ;; esac; done\nexec \"$@\"\n",
        )
        .expect("write sudo");
        std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
        Reader { home, work, path }
    }

    /// Runs `preamble` then the blocks in one bash; panics with the failing command.
    fn run(&self, env: &[(&str, &str)], preamble: &str, blocks: &[Block]) {
        assert!(!blocks.is_empty(), "no runnable blocks");
        let shown = self.home.with_file_name("shown");
        std::fs::create_dir_all(&shown).expect("shown dir");
        let script = format!("{preamble}\n{}", script(blocks));
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&script)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("LANG", "C.UTF-8")
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("DOC_SHOWN", &shown);
        // Its own process group, so a timeout ends the commands bash started too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("run bash");
        // A command that waits for input it will never get (a prompt that slipped into a
        // runnable block) must fail the test, not hang the suite.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(std::time::Duration::from_secs(300)) {
            Ok(out) => out.expect("bash output"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
                panic!("the runnable doc blocks did not finish within 300 s (a prompt?)");
            }
        };
        assert!(
            out.status.success(),
            "a runnable doc block failed ({:?})\n--- stderr:\n{}\n--- stdout:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        compare_shown(blocks, &shown);
    }
}

/// `coffer server -dev` on an ephemeral port with a root token of its own; killed on drop.
struct DevServer {
    child: std::process::Child,
    addr: String,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dev_server(token: &str) -> DevServer {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args(["server", "-dev", "-dev-listen-address=127.0.0.1:0"])
        .arg(format!("-dev-root-token-id={token}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dev server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.expect("banner");
        if addr.is_none()
            && let Some(rest) = line.split("addr: \"").nth(1)
        {
            addr = rest.split('"').next().map(str::to_owned);
        }
        if line.contains("Coffer server started") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addr = addr.expect("the dev banner names its address");
    DevServer { child, addr: format!("http://{addr}") }
}

#[test]
fn getting_started_on_the_dev_server_runs_as_written() {
    let dir = tempdir();
    let reader = Reader::new(dir.path());
    let token = "doc-test-root-token";
    let dev = dev_server(token);
    let (blocks, _) = getting_started();
    reader.run(&[("COFFER_ADDR", &dev.addr), ("COFFER_TOKEN", token)], "", &blocks);
}

#[tokio::test]
async fn getting_started_production_then_auth_leases_audit_run_as_written() {
    let dir = tempdir();
    let reader = Reader::new(&dir.path().join("reader"));
    let p = crate::tls::pki(dir.path());
    let mut s =
        Server::start_with(dir.path(), &crate::tls::tls_config(dir.path(), &p, ""), "https");
    s.ca = Some(p.ca.clone());
    let (keys, root) = s.init(5, 3).await;
    s.unseal(&keys[..3]).await;

    let (_, mut blocks) = getting_started();
    for g in ["auth.md", "leases.md", "audit.md", "database.md"] {
        blocks.extend(runnable_blocks(g, &guide(g)));
    }
    let log_dir = dir.path().join("var-log-coffer");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let log_dir = log_dir.display().to_string();
    for c in blocks.iter_mut().flat_map(|b| b.commands.iter_mut()) {
        c.text = c.text.replace("/var/log/coffer", &log_dir);
    }
    let ca = p.ca.display().to_string();
    // §5.7's non-interactive login with the root token §5.5 printed, and its audit device.
    let preamble = format!(
        "printf '%s\\n' \"$ROOT_TOKEN\" | coffer login - > /dev/null\nunset ROOT_TOKEN\n\
         coffer audit enable file file_path={log_dir}/audit.log > /dev/null"
    );
    reader.run(
        &[("COFFER_ADDR", &s.addr), ("COFFER_CACERT", &ca), ("ROOT_TOKEN", &root)],
        &preamble,
        &blocks,
    );
}

#[test]
fn the_extractor_reads_commands_comments_and_heredocs() {
    let md = "text\n<!-- not runnable: a reason -->\n```sh\nx\n```\n<!-- runnable -->\n```sh\n# a comment\ncoffer a \\\n  b\ncat > x <<'EOF'\npath \"x\" # no\nEOF\ncoffer read x   # prints \"y\", exits 2\n```\n```sh\nnot run\n```\n";
    let blocks = runnable_blocks("t.md", md);
    assert_eq!(blocks.len(), 1);
    let c = &blocks[0].commands;
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(c[0], DocCommand { line: 9, text: "coffer a \\\n  b".into() });
    assert_eq!(c[1].line, 11);
    assert!(c[1].text.ends_with("\nEOF"));
    assert_eq!(trailing_comment(&c[1].text), None);
    let (cmd, comment) = trailing_comment(&c[2].text).expect("comment");
    assert_eq!(cmd, "coffer read x");
    assert_eq!(expectation(comment), Expect::Fails { status: Some(2), says: Some("y".into()) });
    assert_eq!(expectation("prints s3cr3t"), Expect::Prints("s3cr3t".into()));
    assert_eq!(
        expectation("Error: permission denied."),
        Expect::Fails { status: None, says: Some("permission denied.".into()) }
    );
    assert_eq!(expectation("allowed: list"), Expect::Success);
    assert_eq!(trailing_comment("echo 'a # b'"), None);

    assert_eq!(
        normalize("token   cfs.oXru\nid  \"f87e857e-cd5c-419d-b8d4-56d393ac3673\",\n"),
        "token <token>\nid \"<uuid>\","
    );
    assert_eq!(normalize("secret_id cfa_0Ab"), "secret_id <token>");
    assert_eq!(normalize("created_time 2026-11-23T00:00:32Z"), "created_time <time>");
    assert_eq!(normalize("token_accessor rp91eYKtoZdpTib73HXwoynT"), "token_accessor <accessor>");
    assert_eq!(normalize("token_accessor eMiQWZvyqTxxilSrxLWIAlll"), "token_accessor <accessor>");
    assert_ne!(normalize("password s3cr3t"), normalize("password x"));

    // A misspelt marker or a skip without a reason is an error, not a block quietly left out.
    for bad in ["<!-- runable -->\n", "<!-- not runnable -->\n", "<!-- not runnable: -->\n"] {
        let r = std::panic::catch_unwind(|| runnable_blocks("t.md", bad));
        assert!(r.is_err(), "{bad:?} was accepted");
    }
}
