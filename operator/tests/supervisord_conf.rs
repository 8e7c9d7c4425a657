//! The supervisord writer against Debian's supervisor 4.2.5 parser (`supervisor.options`, what
//! supervisord itself runs): every file it writes parses, has exactly the programs written, and
//! reads back every value unchanged; what it cannot write literally it refuses. A fixed corpus,
//! and a property over generated values (proptest, fixed seed), each parsed in ONE parser run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kres_operator::backend::supervisord::conf::{
    Layout, Program, UnwritableValue, program_conf, supervisord_conf,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::Value;

/// Argument words that stress the command line quoting (spaces, quotes, `%`, `;`/`#` after a
/// blank, which the INI parser would take for a comment).
const WORDS: &[&str] = &[
    "/var/cache/knot-resolver",
    "/srv/dns cache",
    "100%",
    "%(there)s",
    "%%",
    "%(here)",
    "x ;y",
    "x #y",
    "a;b#c",
    "it's",
    "\"q\"",
    "back\\slash",
    "ünïcode",
    "-c",
    "",
];

fn program(name: &str, command: Vec<String>, user: Option<&str>, rundir: &Path) -> Program {
    Program {
        name: name.into(),
        command,
        env: vec![
            ("KRES_RUNDIR".into(), rundir.display().to_string()),
            ("SYSTEMD_INSTANCE".into(), "0".into()),
            ("WITH_SPACE".into(), "a b, c=d".into()),
        ],
        user: user.map(str::to_string),
        priority: 100,
        exitcodes: "0,1",
        startsecs: 0,
        startretries: 0,
    }
}

/// One case: a rundir (relative to the temp dir) and its programs.
struct Case {
    layout: Layout,
    programs: Vec<Program>,
}

fn case(base: &Path, rundir: &str) -> Case {
    let rundir = base.join(rundir);
    let mut programs = vec![];
    for (i, w) in WORDS.iter().enumerate() {
        let command = vec![
            "/usr/sbin/kres-cache-gc".to_string(),
            "-c".into(),
            w.to_string(),
            format!("{w}{w}"),
        ];
        let user = (i % 2 == 0).then_some("knot-resolver");
        programs.push(program(&format!("p{i}"), command, user, &rundir));
    }
    Case {
        layout: Layout { rundir },
        programs,
    }
}

fn parse_all(confs: &[PathBuf]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/supervisor_parse.py");
    // Debian's python3 (the one /usr/bin/supervisord runs with), not one from PATH.
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(confs)
        .output()
        .expect("/usr/bin/python3 with Debian's supervisor (apt-get install supervisor)");
    assert!(
        out.status.success(),
        "parser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output is JSON")
}

/// Write a case's supervisord.conf and program files (creating its directories); the
/// supervisord.conf path.
fn write_case(c: &Case) -> Result<PathBuf, UnwritableValue> {
    let main = supervisord_conf(&c.layout)?;
    let programs = c
        .programs
        .iter()
        .map(|p| Ok((c.layout.program_conf(&p.name), program_conf(&c.layout, p)?)))
        .collect::<Result<Vec<_>, UnwritableValue>>()?;
    std::fs::create_dir_all(c.layout.programs_dir()).unwrap();
    std::fs::create_dir_all(c.layout.logs_dir()).unwrap();
    let conf = c.layout.supervisord_conf();
    std::fs::write(&conf, main).unwrap();
    for (path, text) in programs {
        std::fs::write(path, text).unwrap();
    }
    Ok(conf)
}

/// Write every case, parse them all in ONE parser run, and check each reads back exactly.
fn assert_cases_read_back(cases: &[Case]) {
    let confs: Vec<PathBuf> = cases.iter().map(|c| write_case(c).unwrap()).collect();
    let parsed = parse_all(&confs);
    assert_eq!(parsed.len(), cases.len());
    let kr_uid = kres_operator::privilege::lookup_user("knot-resolver")
        .expect("Debian's knot-resolver user")
        .uid;
    for (c, got) in cases.iter().zip(&parsed) {
        assert_read_back(c, got, kr_uid);
    }
}

/// What the parser read (`got`) is exactly what `c` wrote.
fn assert_read_back(c: &Case, got: &Value, kr_uid: u32) {
    let rundir = c.layout.rundir.display().to_string();
    assert!(got.get("error").is_none(), "{rundir:?}: {got}");
    // supervisor normalizes some paths (`os.path.normpath`: `//`, `/./`, a trailing `/`):
    // paths are compared as the same file, component by component.
    let same_file = |read: &Value, want: PathBuf| match read {
        Value::String(read) => assert!(
            Path::new(read).components().eq(want.components()),
            "{read:?} is not {want:?}"
        ),
        other => panic!("{rundir:?}: {other} is not {want:?}"),
    };
    match got["sockets"].as_array().map(Vec::as_slice) {
        Some([read]) => same_file(read, c.layout.supervisord_socket()),
        other => panic!("{rundir:?}: sockets {other:?}"),
    }
    same_file(&got["pidfile"], c.layout.supervisord_pidfile());
    same_file(&got["logfile"], c.layout.rundir.join("supervisord.log"));
    same_file(&got["childlogdir"], c.layout.logs_dir());
    same_file(&got["directory"], c.layout.rundir.clone());
    let programs = got["programs"].as_array().expect("programs");
    // Exactly the programs written: no section smuggled in, none lost.
    assert_eq!(programs.len(), c.programs.len(), "{rundir:?}: {got}");
    let by_name: BTreeMap<&str, &Value> = programs
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p))
        .collect();
    for p in &c.programs {
        let read = by_name.get(p.name.as_str()).expect("program read back");
        assert_eq!(
            read["argv"],
            serde_json::json!(p.command),
            "{rundir:?} {}",
            p.name
        );
        same_file(&read["directory"], c.layout.rundir.clone());
        let env: BTreeMap<String, String> =
            serde_json::from_value(read["environment"].clone()).unwrap();
        assert_eq!(
            env,
            p.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            "{rundir:?} {}",
            p.name
        );
        let uid = p.user.as_ref().map(|_| kr_uid);
        assert_eq!(read["uid"], serde_json::json!(uid), "{}", p.name);
        same_file(
            &read["stdout_logfile"],
            c.layout.logs_dir().join(format!("{}.log", p.name)),
        );
    }
}

#[test]
fn every_generated_file_parses_and_reads_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    assert_cases_read_back(&[
        case(tmp.path(), "run"),
        case(tmp.path(), "my_run%dir"),
        case(tmp.path(), "a;b#c%x%%(y)s"),
        case(tmp.path(), "ünï-cöde"),
        case(tmp.path(), "[gl]ob*?"),
    ]);
}

#[test]
fn values_that_cannot_be_written_literally_are_refused() {
    let ok = Layout {
        rundir: "/run/kres-operator".into(),
    };
    let gc = |arg: &str| {
        program(
            "cache-gc",
            vec!["kres-cache-gc".into(), arg.into()],
            None,
            &ok.rundir,
        )
    };
    let issue = "/var/cache/x\n[program:pwn]\ncommand=/bin/touch /tmp/PWNED\nautostart=true\n";
    for (arg, rule) in [
        (issue, "control characters"),
        ("/var/cache/x\n", "control characters"),
        ("/var/cache/x\ry", "control characters"),
        ("/var/cache/x\ty", "control characters"),
        ("/var/cache/x\u{85}", "control characters"),
        ("/var/cache/%(here)s", "'%(here)s'"),
    ] {
        let err: UnwritableValue = program_conf(&ok, &gc(arg)).unwrap_err();
        assert_eq!(err.field, "program:cache-gc command");
        assert!(err.rule.contains(rule), "{arg:?}: {err}");
    }
    // Paths written as raw values: a rundir with what the INI parser strips or cuts.
    for (rundir, rule) in [
        ("/run/x\n[program:pwn]", "control characters"),
        ("/run/x ;comment", "after whitespace"),
        ("/run/x #comment", "after whitespace"),
        ("/run/x ", "trailing whitespace"),
    ] {
        let layout = Layout {
            rundir: rundir.into(),
        };
        let err = supervisord_conf(&layout).unwrap_err();
        assert_ne!(err.field, "supervisord include", "{err}");
        assert!(err.rule.contains(rule), "{rundir:?}: {err}");
        assert!(err.field.starts_with("supervisord "), "{err}");
        let p = program("kresd0", vec!["kresd".into()], None, &ok.rundir);
        let err = program_conf(&layout, &p).unwrap_err();
        assert!(err.rule.contains(rule), "{rundir:?}: {err}");
    }
    // The include list is split at whitespace: programs would silently not be read.
    let spaced = Layout {
        rundir: "/run/kres operator".into(),
    };
    let err = supervisord_conf(&spaced).unwrap_err();
    assert_eq!(err.field, "supervisord include");
    // Environment values with quotes, bad names, bad program names.
    let mut p = gc("/x");
    p.env = vec![("A".into(), "say \"hi\"".into())];
    let err = program_conf(&ok, &p).unwrap_err();
    assert_eq!(err.field, "program:cache-gc environment");
    p.env = vec![("A=B".into(), "x".into())];
    assert!(program_conf(&ok, &p).is_err());
    let mut p = gc("/x");
    p.name = "pwn]\n[program:x".into();
    assert_eq!(program_conf(&ok, &p).unwrap_err().field, "program name");
}

/// Pieces that mean something to the INI parser, supervisor's `%` expansion, shlex or the
/// environment list.
const PIECES: &[&str] = &[
    "%",
    "%%",
    "%(here)s",
    "%(here)",
    "%(ENV_HOME)s",
    "%(program_name)s",
    "%s",
    " ;",
    " #",
    ";",
    "#",
    "'",
    "\"",
    "\\",
    " ",
    "\u{a0}",
    "\u{2028}",
    "\n",
    "\r",
    "\t",
    "=",
    ",",
    "[",
    "]",
    "x",
    "ü",
    "/",
];

/// Arbitrary Unicode (control characters included), strings built from [`PIECES`], and (most
/// often, so that most programs are writable) printable awkward characters with blanks at either
/// end.
fn ini_strings() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => vec(any::<char>(), 0..16).prop_map(String::from_iter),
        1 => vec(select(PIECES), 0..8).prop_map(|p| p.concat()),
        4 => "[ ]{0,2}[a-zü%;#'\"\\\\ ()=,]{0,12}[ ]{0,2}",
    ]
}

/// A rundir (under the case's own temp dir: no `..` component) and per program its extra
/// command words and environment values.
type Generated = (String, Vec<(Vec<String>, Vec<String>)>);

fn generated() -> impl Strategy<Value = Generated> {
    // Rundirs with blanks or quotes are refused (include list, environment): mostly without.
    let rundir = prop_oneof![
        1 => ini_strings(),
        3 => "[a-zü%;#\\\\()=,.\\[\\]-]{0,12}(/[a-z%;#()]{0,6}){0,2}",
    ]
    .prop_filter("stays in its temp dir", |s| {
        !s.split('/').any(|c| c == "..")
    });
    let program = (vec(ini_strings(), 0..4), vec(ini_strings(), 0..2));
    (rundir, vec(program, 1..4))
}

/// `err` refuses a value that came from the generated strings of `field_prefix`.
fn assert_refusal(err: &UnwritableValue, field_prefix: &str, fields: &[&str]) {
    let field = err.field.strip_prefix(field_prefix);
    assert!(
        field.is_some_and(|f| fields.contains(&f)),
        "refused under an unexpected field: {err}"
    );
    assert!(!err.rule.is_empty(), "{err}");
}

/// Property: any rundir, command words and environment values are either refused by the
/// writer with an [`UnwritableValue`] naming where they were going (nothing is written for a
/// refused program; a refused rundir writes nothing at all), or written so that supervisor's
/// parser reads back exactly those values. Fixed seed, `KRES_PROP_CASES` cases (default 128),
/// every accepted case parsed in ONE parser run.
#[test]
fn generated_values_are_refused_or_read_back_exactly() {
    let cases: u32 = std::env::var("KRES_PROP_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(128);
    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(0x6b72_6573_2000),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = generated();
    let tmp = tempfile::tempdir().unwrap();
    let (mut written, mut refused_rundirs, mut refused_programs) = (vec![], 0, 0);
    for i in 0..cases {
        let (rundir, programs) = strategy.new_tree(&mut runner).unwrap().current();
        let layout = Layout {
            rundir: format!("{}/{i}/{rundir}", tmp.path().display()).into(),
        };
        if let Err(err) = supervisord_conf(&layout) {
            assert!(err.field.starts_with("supervisord "), "{err}");
            refused_rundirs += 1;
            continue;
        }
        let mut accepted = vec![];
        for (j, (words, env)) in programs.into_iter().enumerate() {
            let mut command = vec!["/usr/sbin/kres-cache-gc".to_string()];
            command.extend(words);
            let user = (j % 2 == 0).then_some("knot-resolver");
            let mut p = program(&format!("p{j}"), command, user, &layout.rundir);
            p.env.extend(
                env.into_iter()
                    .enumerate()
                    .map(|(k, v)| (format!("V{k}"), v)),
            );
            match program_conf(&layout, &p) {
                Ok(_) => accepted.push(p),
                Err(err) => {
                    let fields = ["command", "environment", "directory", "stdout_logfile"];
                    assert_refusal(&err, &format!("program:p{j} "), &fields);
                    refused_programs += 1;
                }
            }
        }
        written.push(Case {
            layout,
            programs: accepted,
        });
    }
    let accepted: usize = written.iter().map(|c| c.programs.len()).sum();
    println!(
        "{cases} cases: {refused_rundirs} rundirs refused; {accepted} programs written in {} \
         rundirs, {refused_programs} refused",
        written.len()
    );
    // Not vacuous: most awkward values are writable.
    assert!(accepted >= cases as usize / 2, "only {accepted} accepted");
    assert_cases_read_back(&written);
}
