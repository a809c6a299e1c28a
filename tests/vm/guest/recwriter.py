#!/usr/bin/python3 -B
"""The test application: appends checksummed records to LOG, one write(2)
each, continuously.  SIGUSR1 = quiesce: write a CHECKPOINT record naming
the token in /run/vmtest/quiesce-token, fsync, pause; SIGUSR2 = resume.
/run/vmtest/app.state says which, for the scripts that wait on it."""
import os
import signal
import sys
import time
import zlib

RUN = "/run/vmtest"
requests = []


def record(seq, payload):
    body = "%08d %s" % (seq, payload)
    return ("%s %08x\n" % (body, zlib.crc32(body.encode()))).encode()


def set_state(text):
    tmp = RUN + "/app.state.tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.rename(tmp, RUN + "/app.state")


def main(log):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with open(RUN + "/app.pid", "w") as f:
        f.write("%d\n" % os.getpid())
    signal.signal(signal.SIGUSR1, lambda *_: requests.append("pause"))
    signal.signal(signal.SIGUSR2, lambda *_: requests.append("resume"))
    seq, paused = 0, False
    set_state("running")
    while True:
        while requests:
            if requests.pop(0) == "pause":
                with open(RUN + "/quiesce-token") as f:
                    token = f.read().strip()
                seq += 1
                os.write(fd, record(seq, "CHECKPOINT " + token))
                os.fsync(fd)
                paused = True
                set_state("paused %s %d" % (token, seq))
            else:
                paused = False
                set_state("running")
        if not paused:
            seq += 1
            os.write(fd, record(seq, "%s %.3f" % (os.urandom(12).hex(), time.time())))
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1])
