#!/usr/bin/env python3
"""Drives the serial console of a qemu guest as an admin would type on it.

qemu serves the guest's serial port on a Unix socket (-chardev socket,server=on,wait=off);
each call connects, types, reads what the guest prints, and disconnects. The guest's root
shell is the appliance's console (autologin on ttyS0).

  console.py SOCKET wait-shell TIMEOUT_S
      call right after starting qemu: wait for getty's login on the console, then until a
      shell answers (probes are typed every few seconds, since input typed before the shell
      runs is discarded by getty)
  console.py SOCKET run TIMEOUT_S COMMAND
      run COMMAND (one line) in that shell, print its output, exit with its status;
      124 when it did not finish in time (it is interrupted with Ctrl-C), 125 when the
      console went away (the guest powered off)

Output is recognised by markers the guest prints (BEGIN/END with a random token and the exit
status); the echo of the typed line never matches them, since the words are joined only in
the output. The command is typed base64-encoded with its digest and runs only if the line
arrived whole (a console can drop input while the guest boots); otherwise it is typed again,
and a lock makes sure it runs at most once.
"""

import base64
import codecs
import hashlib
import re
import secrets
import socket
import sys
import time


def connect(path, deadline):
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_until(sock, pattern, deadline, buf=""):
    """Reads until pattern matches the text received; returns (match, text) or (None, text)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        m = pattern.search(buf)
        if m:
            return m, buf
        left = deadline - time.monotonic()
        if left <= 0:
            return None, buf
        sock.settimeout(min(left, 1.0))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise ConnectionError("console closed")
        buf += decoder.decode(data).replace("\r", "")


def type_line(sock, line):
    sock.sendall(line.encode() + b"\n")


def wait_shell(path, timeout_s):
    deadline = time.monotonic() + timeout_s
    sock = connect(path, deadline)
    # Keys typed earlier would reach the firmware or the boot menu; start when getty logs in.
    m, buf = read_until(sock, re.compile(r"login: "), deadline)
    if not m:
        print("console: no login on the console within %d s" % timeout_s, file=sys.stderr)
        return 124
    tokens = []
    while time.monotonic() < deadline:
        token = secrets.token_hex(6)
        tokens.append(token)
        # A wide terminal keeps listings on one line; no pager, no colours.
        type_line(sock, "stty cols 250; export SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 PAGER=cat; "
                  "printf '%s_%s\\n' RSIOREADY " + token)
        pattern = re.compile("RSIOREADY_(" + "|".join(tokens) + ")\n")
        m, buf = read_until(sock, pattern, min(deadline, time.monotonic() + 3), buf)
        if m:
            return 0
    print("console: no shell answered within %d s" % timeout_s, file=sys.stderr)
    return 124


def run(path, timeout_s, command):
    deadline = time.monotonic() + timeout_s
    sock = connect(path, deadline)
    # The command travels base64-encoded with its digest and runs only when the line arrived
    # whole; a lock directory named after this run lets a retyped line run it at most once.
    run_id = secrets.token_hex(6)
    script = (command + "\n").encode()
    file = "/run/rsio-console-%s" % run_id
    line = ("if echo %s | base64 -d >%s.sh && [ \"$(md5sum <%s.sh)\" = \"%s  -\" ] && "
            "mkdir %s.lock 2>/dev/null; then printf '%%s_%%s\\n' RSIOBEGIN %s; . %s.sh; "
            "printf '%%s_%%s_%%s\\n' RSIOEND %s $?; fi"
            % (base64.b64encode(script).decode(), file, file, hashlib.md5(script).hexdigest(),
               file, run_id, file, run_id))
    begin = re.compile("RSIOBEGIN_%s\n" % run_id)
    buf = ""
    for _ in range(5):
        type_line(sock, line)
        m, buf = read_until(sock, begin, min(deadline, time.monotonic() + 20), buf)
        if m:
            break
        # Lost or garbled on the way (the console can drop input while the guest boots):
        # cancel what may wait in the line buffer and type it again.
        sock.sendall(b"\x03")
    else:
        print("console: the guest did not take the command: %s" % command, file=sys.stderr)
        return 124
    buf = buf[m.end():]
    end = re.compile("^(.*?)RSIOEND_%s_(\\d+)\n" % run_id, re.S)
    m, buf = read_until(sock, end, deadline, buf)
    if not m:
        sock.sendall(b"\x03")
        sys.stdout.write(buf)
        print("console: command did not finish within %d s: %s" % (timeout_s, command),
              file=sys.stderr)
        return 124
    sys.stdout.write(m.group(1))
    sys.stdout.flush()
    return int(m.group(2))


def main(argv):
    if len(argv) < 4 or argv[2] not in ("wait-shell", "run") or (argv[2] == "run" and len(argv) != 5):
        print(__doc__, file=sys.stderr)
        return 2
    path, action, timeout_s = argv[1], argv[2], float(argv[3])
    try:
        if action == "wait-shell":
            return wait_shell(path, timeout_s)
        return run(path, timeout_s, argv[4])
    except (ConnectionError, OSError) as e:
        print("console: %s: %s" % (path, e), file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv))
