#!/usr/bin/python3
"""A minimal rsh for the two-VM tier, so that mpirun on node 1 can start
Open MPI's orted on node 2 (the VMs have no sshd, and both see the host's
filesystem read-only, so the same paths work on both).

    vm-rsh.py serve ADDR        on node 2 (port 7472): run each received command with
                                `sh -c`, stream its output back, then its
                                exit status; exit on the command
                                `__shutdown__`.
    vm-rsh.py HOST CMD...       on node 1 (what plm_rsh_agent calls, as it
                                would call ssh): run CMD on HOST and exit
                                with its status. Retries the connection for
                                up to 180 s (node 2 boots later).

Only for two throwaway VMs joined by a private qemu socket network: no
authentication, no encryption, never on a real network.

Protocol: the client sends the command (UTF-8) and shuts down its write
side; the server sends the command's stdout and stderr merged, then a NUL
byte and the exit status in decimal, and closes.
"""

import os
import socket
import subprocess
import sys
import time

PORT = 7472


def serve(addr):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, PORT))
    srv.listen(8)
    print(f"vm-rsh: serving on {addr}:{PORT}", flush=True)
    while True:
        conn, peer = srv.accept()
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        cmd = data.decode()
        if cmd == "__shutdown__":
            conn.sendall(b"\0" + b"0")
            conn.close()
            print("vm-rsh: shut down", flush=True)
            return
        print(f"vm-rsh: {peer[0]}: {cmd}", flush=True)
        if os.fork() == 0:
            srv.close()
            proc = subprocess.run(
                ["sh", "-c", cmd],
                stdin=subprocess.DEVNULL,
                stdout=conn.fileno(),
                stderr=subprocess.STDOUT,
            )
            conn.sendall(b"\0" + str(proc.returncode).encode())
            conn.close()
            os._exit(0)
        conn.close()
        # Reap finished children without blocking.
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def client(host, cmd):
    deadline = time.monotonic() + 180
    while True:
        try:
            conn = socket.create_connection((host, PORT), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                print(f"vm-rsh: cannot connect to {host}:{PORT}", file=sys.stderr)
                return 255
            time.sleep(1)
    conn.settimeout(None)
    conn.sendall(cmd.encode())
    conn.shutdown(socket.SHUT_WR)
    tail = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        tail += chunk
        # Pass output through as it comes, keeping back what may be the
        # status trailer.
        nul = tail.rfind(b"\0")
        keep = tail[nul:] if nul >= 0 else b""
        out = tail[:nul] if nul >= 0 else tail
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
        tail = keep
    if not tail.startswith(b"\0"):
        print(f"vm-rsh: {host} closed without a status", file=sys.stderr)
        return 255
    return int(tail[1:] or b"255")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
        return 0
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    # Like ssh: the remote command is the arguments joined by spaces.
    return client(sys.argv[1], " ".join(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
