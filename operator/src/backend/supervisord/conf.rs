//! Files the supervisord backend writes into the rundir, and reading revision and probe address
//! back from supervisord's view of a program (its command line): what makes adoption possible.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::reconcile::{Revision, Slot};

/// Program name of the shared-socket holder.
pub const HOLDER_PROGRAM: &str = "sockets";
/// Program name of the cache garbage collector.
pub const GC_PROGRAM: &str = "cache-gc";
/// Program name prefix of kresd workers.
pub const WORKER_PREFIX: &str = "kresd";

/// Where everything lives inside the rundir.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The rundir (kresd's working directory too).
    pub rundir: PathBuf,
}

impl Layout {
    /// supervisord's configuration file.
    pub fn supervisord_conf(&self) -> PathBuf {
        self.rundir.join("supervisord.conf")
    }
    /// supervisord's XML-RPC unix socket.
    pub fn supervisord_socket(&self) -> PathBuf {
        self.rundir.join("supervisord.sock")
    }
    /// supervisord's pidfile.
    pub fn supervisord_pidfile(&self) -> PathBuf {
        self.rundir.join("supervisord.pid")
    }
    /// One `.conf` per program.
    pub fn programs_dir(&self) -> PathBuf {
        self.rundir.join("programs")
    }
    /// Program logs (stderr of every worker).
    pub fn logs_dir(&self) -> PathBuf {
        self.rundir.join("logs")
    }
    /// The operator's NOTIFY_SOCKET.
    pub fn notify_socket(&self) -> PathBuf {
        self.rundir.join("notify.sock")
    }
    /// The shared-socket holder's unix socket.
    pub fn holder_socket(&self) -> PathBuf {
        self.rundir.join("sockets.sock")
    }
    /// The directory of one revision.
    pub fn revision_dir(&self, revision: &str) -> PathBuf {
        self.rundir.join("revisions").join(revision)
    }
    /// The kresd config of one revision.
    pub fn revision_config(&self, revision: &str) -> PathBuf {
        self.revision_dir(revision).join("kresd.conf")
    }
    /// kresd's working directory (its `rundir` argument): owned by the worker user, since
    /// kresd 5.6 refuses a rundir it cannot write.
    pub fn kresd_dir(&self) -> PathBuf {
        self.rundir.join("kresd")
    }
    /// kresd's control sockets (`kresd/control/<pid>`).
    pub fn control_dir(&self) -> PathBuf {
        self.kresd_dir().join("control")
    }
    /// The status snapshot written for humans and tests.
    pub fn status_file(&self) -> PathBuf {
        self.rundir.join("status.json")
    }
    /// A program's `.conf` file.
    pub fn program_conf(&self, program: &str) -> PathBuf {
        self.programs_dir().join(format!("{program}.conf"))
    }
    /// Records of what each worker program was started on (see [`WorkerCommand`]).
    pub fn workers_dir(&self) -> PathBuf {
        self.rundir.join("workers")
    }
    /// The record of one worker program: `workers/<program>.json`.
    pub fn worker_record(&self, program: &str) -> PathBuf {
        self.workers_dir().join(format!("{program}.json"))
    }
}

/// The supervisord program name of a slot.
pub fn program_name(slot: Slot) -> String {
    match slot {
        Slot::Worker(i) => format!("{WORKER_PREFIX}{i}"),
        Slot::Surge => format!("{WORKER_PREFIX}-canary"),
    }
}

/// The slot of a program name, if it is a worker.
pub fn slot_of_program(name: &str) -> Option<Slot> {
    let rest = name.strip_prefix(WORKER_PREFIX)?;
    if rest == "-canary" {
        return Some(Slot::Surge);
    }
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok().map(Slot::Worker)
}

/// A value the supervisord writer refuses: supervisord would not read it back unchanged (or
/// it would change the file's structure).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("supervisord {field}: cannot write {value:?} literally: {rule}")]
pub struct UnwritableValue {
    /// Where the value was going (`program:kresd0 command`, `supervisord directory`...).
    pub field: String,
    /// The value.
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

/// The one escaping function for values in supervisord's INI files (supervisor 4.2.5: Python's
/// `RawConfigParser` with `;`/`#` inline comments, values stripped, indented lines continuing a
/// value, `%(here)s` replaced as plain text, then `%(name)s` expansion): `%` is doubled; what
/// cannot be written so that it reads back unchanged is refused.
pub fn ini_value(field: &str, value: &str) -> Result<String, UnwritableValue> {
    let refuse = |rule| {
        Err(UnwritableValue {
            field: field.to_string(),
            value: value.to_string(),
            rule,
        })
    };
    if value.is_empty() {
        return refuse("empty");
    }
    if value.chars().any(char::is_control) {
        return refuse("control characters (a newline would start a new line or section)");
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return refuse("leading or trailing whitespace (stripped by the parser)");
    }
    let mut prev_blank = false;
    for c in value.chars() {
        if prev_blank && (c == ';' || c == '#') {
            return refuse("';' or '#' after whitespace (starts a comment)");
        }
        prev_blank = c.is_whitespace();
    }
    // supervisor replaces the text `%(here)s` before it undoes `%%`, so `%%(here)s` too.
    if value.contains("%(here)s") {
        return refuse("'%(here)s' (replaced by supervisor even when escaped)");
    }
    Ok(value.replace('%', "%%"))
}

/// A program name usable in `[program:NAME]`: ASCII letters, digits, `-`, `_`, `.`.
fn section_name(name: &str) -> Result<&str, UnwritableValue> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(UnwritableValue {
            field: "program name".into(),
            value: name.to_string(),
            rule: "only ASCII letters, digits, '-', '_' and '.'",
        })
    }
}

/// `environment=`: `KEY="value",...`. supervisor splits it with a non-POSIX shlex (no escapes)
/// and strips quotes from both ends, so keys must be identifiers and values free of quotes.
fn environment(program: &str, env: &[(String, String)]) -> Result<String, UnwritableValue> {
    let field = format!("program:{program} environment");
    let refuse = |value: &str, rule| UnwritableValue {
        field: field.clone(),
        value: value.to_string(),
        rule,
    };
    let mut pairs = Vec::with_capacity(env.len());
    for (k, v) in env {
        let key_ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(refuse(
                k,
                "a variable name is ASCII letters, digits and '_'",
            ));
        }
        if v.contains(['"', '\'']) {
            return Err(refuse(v, "quotes in an environment value"));
        }
        pairs.push(format!("{k}=\"{v}\""));
    }
    ini_value(&field, &pairs.join(","))
}

/// supervisord.conf: unix socket (0600) and pidfile in the rundir, programs included from
/// `programs/*.conf`.
pub fn supervisord_conf(layout: &Layout) -> Result<String, UnwritableValue> {
    let path = |field: &str, p: &Path| {
        ini_value(&format!("supervisord {field}"), &p.display().to_string())
    };
    let mut s = String::new();
    let _ = writeln!(s, "; written by kres-operator; regenerated at every start");
    let _ = writeln!(s, "[unix_http_server]");
    let _ = writeln!(s, "file={}", path("socket", &layout.supervisord_socket())?);
    let _ = writeln!(s, "chmod=0600\n");
    let _ = writeln!(s, "[supervisord]");
    let _ = writeln!(
        s,
        "pidfile={}",
        path("pidfile", &layout.supervisord_pidfile())?
    );
    let _ = writeln!(
        s,
        "logfile={}",
        path("logfile", &layout.rundir.join("supervisord.log"))?
    );
    let _ = writeln!(s, "logfile_maxbytes=1MB\nlogfile_backups=1\nloglevel=info");
    let _ = writeln!(
        s,
        "childlogdir={}",
        path("childlogdir", &layout.logs_dir())?
    );
    let _ = writeln!(s, "directory={}", path("directory", &layout.rundir)?);
    let _ = writeln!(s, "minfds=1024\n");
    let _ = writeln!(s, "[rpcinterface:supervisor]");
    let _ = writeln!(
        s,
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
    );
    let _ = writeln!(s, "[supervisorctl]");
    let _ = writeln!(
        s,
        "serverurl=unix://{}\n",
        path("serverurl", &layout.supervisord_socket())?
    );
    let _ = writeln!(s, "[include]");
    // `files` is a glob (Python's `glob.glob`): its metacharacters are escaped as `glob.escape`
    // does, or a rundir with `[...]` would silently include no program.
    let programs_dir = layout.programs_dir().display().to_string();
    let include = ini_value("supervisord include", &glob_escape(&programs_dir))?;
    if include.contains(char::is_whitespace) {
        // `files` is a whitespace-separated list of globs.
        return Err(UnwritableValue {
            field: "supervisord include".into(),
            value: programs_dir,
            rule: "whitespace (the include list is split at whitespace)",
        });
    }
    let _ = writeln!(s, "files = {include}/*.conf");
    Ok(s)
}

/// Escape a literal path for Python's `glob` (as `glob.escape`): `*`, `?` and `[` each in a
/// one-character class.
fn glob_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// One supervisord program.
#[derive(Clone, Debug)]
pub struct Program {
    /// Program (and group) name.
    pub name: String,
    /// argv.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Run as this user (supervisord drops privileges before exec); `None`: as supervisord.
    pub user: Option<String>,
    /// Start order (lower first).
    pub priority: u32,
    /// supervisord's `exitcodes`: an exit with one of these is final (no restart).
    pub exitcodes: &'static str,
    /// supervisord's `startsecs` (0 for workers: readiness is READY=1 + probe).
    pub startsecs: u32,
    /// supervisord's `startretries`.
    pub startretries: u32,
}

/// The `[program:x]` section.
pub fn program_conf(layout: &Layout, p: &Program) -> Result<String, UnwritableValue> {
    let name = section_name(&p.name)?;
    let field = |f: &str| format!("program:{name} {f}");
    let mut s = String::new();
    let _ = writeln!(s, "[program:{name}]");
    let _ = writeln!(
        s,
        "command={}",
        ini_value(&field("command"), &join_command(&p.command))?
    );
    let _ = writeln!(
        s,
        "directory={}",
        ini_value(&field("directory"), &layout.rundir.display().to_string())?
    );
    if !p.env.is_empty() {
        let _ = writeln!(s, "environment={}", environment(name, &p.env)?);
    }
    if let Some(user) = &p.user {
        let _ = writeln!(s, "user={}", ini_value(&field("user"), user)?);
    }
    let _ = writeln!(s, "priority={}", p.priority);
    // Readiness is READY=1 + a DNS probe, not supervisord's startsecs (FACTS: startsecs costs
    // a second per start). A config error (rc 1) is final; a crash/kill is restarted at once.
    let _ = writeln!(
        s,
        "startsecs={}\nstartretries={}",
        p.startsecs, p.startretries
    );
    let _ = writeln!(s, "autostart=true\nautorestart=unexpected");
    let _ = writeln!(s, "exitcodes={}", p.exitcodes);
    let _ = writeln!(s, "stopsignal=TERM\nstopwaitsecs=5\nkillasgroup=false");
    let log = layout.logs_dir().join(format!("{name}.log"));
    let _ = writeln!(s, "redirect_stderr=true");
    // supervisor expands `stdout_logfile` twice (saneget, then again): `%` becomes `%%%%`.
    let log = ini_value(&field("stdout_logfile"), &log.display().to_string())?;
    let _ = writeln!(s, "stdout_logfile={}", log.replace('%', "%%"));
    let _ = writeln!(s, "stdout_logfile_maxbytes=1MB\nstdout_logfile_backups=1");
    Ok(s)
}

/// Join argv into a command line supervisord splits back (POSIX shlex): words with special
/// characters are single-quoted; `;`/`#` after whitespace are backslash-escaped outside the
/// quotes so the INI parser does not take them for a comment. Pass the result through
/// [`ini_value`].
pub fn join_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| quote_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@:=,+".contains(&b));
    if plain {
        return w.to_string();
    }
    let mut out = String::from("'");
    let mut prev_blank = false;
    for c in w.chars() {
        match c {
            '\'' => out.push_str("'\"'\"'"),
            ';' | '#' if prev_blank => {
                out.push('\'');
                out.push('\\');
                out.push(c);
                out.push('\'');
            }
            c => out.push(c),
        }
        prev_blank = c.is_whitespace();
    }
    out.push('\'');
    out
}

/// Split a command line as supervisord reports it back (single and double quotes, backslash).
pub fn split_command(line: &str) -> Vec<String> {
    let mut words = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// What a worker's command line says about it. Also the record the backend writes (atomically,
/// before adding the program) of what a worker was started on: supervisord's
/// `getAllConfigInfo` describes the *staged* program once a revision is staged for the slot,
/// not the process running or exited in it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerCommand {
    /// Revision (the directory name of the `-c` config path).
    pub revision: Revision,
    /// The private probe endpoint (`-a IP@PORT`).
    pub probe: Option<SocketAddr>,
}

/// Recover revision and probe endpoint from a worker's command line.
pub fn parse_worker_command(line: &str) -> Option<WorkerCommand> {
    let words = split_command(line);
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| w == flag)
            .and_then(|i| words.get(i + 1))
            .cloned()
    };
    let config = PathBuf::from(after("-c")?);
    let revision = config.parent()?.file_name()?.to_str()?.to_string();
    let probe = after("-a").and_then(|a| {
        let (ip, port) = a.rsplit_once('@')?;
        Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
    });
    Some(WorkerCommand { revision, probe })
}

/// The command of a slot's worker: `kresd -n -a PROBE -c REVISION_CONFIG RUNDIR/kresd`, optionally
/// wrapped by `launcher` (which receives the shared listening sockets and execs kresd with
/// `-S FD` arguments added).
pub fn worker_command(
    layout: &Layout,
    launcher: &[String],
    kresd: &str,
    revision: &str,
    probe: SocketAddr,
) -> Vec<String> {
    let mut argv: Vec<String> = launcher.to_vec();
    argv.extend([
        kresd.to_string(),
        "-n".into(),
        "-a".into(),
        format!("{}@{}", probe.ip(), probe.port()),
        "-c".into(),
        layout.revision_config(revision).display().to_string(),
        layout.kresd_dir().display().to_string(),
    ]);
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_command_round_trips_through_supervisord_quoting() {
        let layout = Layout {
            rundir: PathBuf::from("/tmp/my run%dir"),
        };
        let probe: SocketAddr = "127.9.8.7:5301".parse().expect("addr");
        let argv = worker_command(&layout, &[], "kresd", "0123abcd", probe);
        let line = join_command(&argv);
        assert_eq!(split_command(&line), argv);
        assert_eq!(
            parse_worker_command(&line),
            Some(WorkerCommand {
                revision: "0123abcd".into(),
                probe: Some(probe)
            })
        );
    }

    #[test]
    fn program_names_map_to_slots() {
        for slot in [Slot::Worker(0), Slot::Worker(12), Slot::Surge] {
            assert_eq!(slot_of_program(&program_name(slot)), Some(slot));
        }
        for other in ["sockets", "cache-gc", "kresd", "kresdx", "kresd-1"] {
            assert_eq!(slot_of_program(other), None, "{other}");
        }
    }

    #[test]
    fn split_handles_quotes() {
        assert_eq!(
            split_command(r#"a 'b c' "d \" e" f\ g"#),
            vec!["a", "b c", "d \" e", "f g"]
        );
    }
}
