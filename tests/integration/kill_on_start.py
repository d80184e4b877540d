"""Run inside a lab host (python3 -c): stop the docker_checkpoint module the moment Docker reports that container
argv[1] has started, then kill it - so that it dies after the start and before it can report. Docker's event stream
wakes this at the start itself, so the module is stopped within milliseconds of it (polling `docker inspect` let it
sometimes finish and report first on a loaded machine). Prints what it saw
and did: `running=true` (the container ran when the module was stopped) and `killed`."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse

MODULE = re.compile(rb"^[^\0]*python[^\0]*\0[^\0]*AnsiballZ_docker_checkpoint[.]py(\0|$)")


def module_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if MODULE.match(handle.read()):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def main(name, seconds=150.0):
    events = socket.socket(socket.AF_UNIX)
    events.connect("/var/run/docker.sock")
    query = urllib.parse.quote(json.dumps({"type": ["container"], "event": ["start"], "container": [name]}))
    events.sendall(f"GET /events?filters={query} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
    events.settimeout(seconds)
    for line in events.makefile("rb"):
        if line.startswith(b"{") and json.loads(line).get("Action") == "start":
            break
    else:
        print("the container did not start")
        return
    pids = module_pids()
    if not pids:
        print("no docker_checkpoint module was running at the start")
        return
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    print(f"stopped {pids}")
    sys.stdout.flush()
    subprocess.run(["docker", "inspect", "-f", "running={{.State.Running}}", name], check=False)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    print("killed", flush=True)


main(sys.argv[1])
