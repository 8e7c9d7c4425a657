//! The supervisord writer against Debian's supervisor 4.2.5 parser (`supervisor.options`, what
//! supervisord itself runs): every file it writes parses, has exactly the programs written, and
//! reads back every value unchanged; what it cannot write literally it refuses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kres_operator::backend::supervisord::conf::{
    Layout, Program, UnwritableValue, program_conf, supervisord_conf,
};
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

#[test]
fn every_generated_file_parses_and_reads_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        case(tmp.path(), "run"),
        case(tmp.path(), "my_run%dir"),
        case(tmp.path(), "a;b#c%x%%(y)s"),
        case(tmp.path(), "ünï-cöde"),
    ];
    let mut confs = vec![];
    for c in &cases {
        std::fs::create_dir_all(c.layout.programs_dir()).unwrap();
        std::fs::create_dir_all(c.layout.logs_dir()).unwrap();
        let conf = c.layout.supervisord_conf();
        std::fs::write(&conf, supervisord_conf(&c.layout).unwrap()).unwrap();
        for p in &c.programs {
            let text = program_conf(&c.layout, p).unwrap();
            std::fs::write(c.layout.program_conf(&p.name), text).unwrap();
        }
        confs.push(conf);
    }
    let parsed = parse_all(&confs);
    assert_eq!(parsed.len(), cases.len());
    let kr_uid = kres_operator::privilege::lookup_user("knot-resolver")
        .expect("Debian's knot-resolver user")
        .uid;
    for (c, got) in cases.iter().zip(&parsed) {
        let rundir = c.layout.rundir.display().to_string();
        assert!(got.get("error").is_none(), "{rundir}: {got}");
        let s = |p: PathBuf| Value::String(p.display().to_string());
        assert_eq!(
            got["sockets"],
            serde_json::json!([s(c.layout.supervisord_socket())])
        );
        assert_eq!(got["pidfile"], s(c.layout.supervisord_pidfile()));
        assert_eq!(got["logfile"], s(c.layout.rundir.join("supervisord.log")));
        assert_eq!(got["childlogdir"], s(c.layout.logs_dir()));
        assert_eq!(got["directory"], s(c.layout.rundir.clone()));
        let programs = got["programs"].as_array().expect("programs");
        // Exactly the programs written: no section smuggled in, none lost.
        assert_eq!(programs.len(), c.programs.len(), "{rundir}: {got}");
        let by_name: BTreeMap<&str, &Value> = programs
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p))
            .collect();
        for p in &c.programs {
            let read = by_name.get(p.name.as_str()).expect("program read back");
            assert_eq!(
                read["argv"],
                serde_json::json!(p.command),
                "{rundir} {}",
                p.name
            );
            assert_eq!(read["directory"], rundir.as_str());
            let env: BTreeMap<String, String> =
                serde_json::from_value(read["environment"].clone()).unwrap();
            assert_eq!(env, p.env.iter().cloned().collect::<BTreeMap<_, _>>());
            let uid = p.user.as_ref().map(|_| kr_uid);
            assert_eq!(read["uid"], serde_json::json!(uid), "{}", p.name);
            assert_eq!(
                read["stdout_logfile"],
                s(c.layout.logs_dir().join(format!("{}.log", p.name)))
            );
        }
    }
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
