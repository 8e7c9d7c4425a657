"""Parse supervisord configuration files with Debian's supervisor (the parser supervisord runs)
and print what it read, as JSON: one entry per argument, in order."""
import json
import shlex
import sys

from supervisor.options import ServerOptions


class Refused(Exception):
    pass


def refuse(msg):
    raise Refused(str(msg))


out = []
for path in sys.argv[1:]:
    o = ServerOptions()
    o.usage = refuse
    try:
        o.realize(args=["-c", path])
    except (Refused, ValueError) as e:
        out.append({"error": str(e)})
        continue
    programs = []
    for g in o.process_group_configs:
        for p in g.process_configs:
            programs.append({
                "name": p.name,
                "argv": shlex.split(p.command),
                "directory": p.directory,
                "environment": p.environment or {},
                "uid": p.uid,
                "stdout_logfile": p.stdout_logfile,
            })
    s = o.configroot.supervisord
    out.append({
        "programs": programs,
        "sockets": [c.get("file") for c in o.server_configs],
        "pidfile": o.pidfile,
        "logfile": o.logfile,
        "childlogdir": s.childlogdir,
        "directory": s.directory,
    })
print(json.dumps(out))
