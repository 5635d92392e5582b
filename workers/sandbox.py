"""A no-network, read-only sandbox a freshly started child process enters before loading a model (pure: stdlib only).

``enter(writable)`` turns the calling process, for the rest of its life, into one that:

- has its own user, mount and network namespaces: the network namespace holds only a loopback
  that is down, so no TCP/UDP connection reaches anything, the host's loopback included;
- sees the whole file system read-only (``mount_setattr`` with ``AT_RECURSIVE``), except bind
  mounts of the ``writable`` directories; files opened before entering (stderr) stay usable;
- sees an empty ``/proc`` except its own ``/proc/<pid>`` (``/proc/self`` names it, also for any
  process it starts) and ``cpuinfo``/``meminfo``: other processes' environments (secrets) and
  their ``/proc/<pid>/root`` (a way back into the writable file system) are out of reach;
- holds no capabilities, even inside its namespaces (so it cannot remount anything writable),
  runs with ``no_new_privs``, and cannot create ``AF_UNIX`` sockets (a socket file on the
  read-only file system would otherwise still accept connections).

Not covered: it shares the worker's PID namespace, so native code running in it could still send
signals to processes of the same user (TorchScript cannot); files the worker may read stay readable.

It must be the first thing the child does: ``unshare(CLONE_NEWUSER)`` fails in a process with
more than one thread, and importing numpy, torch or onnxruntime starts thread pools.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from workers.errors import EngineError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
MOUNT_ATTR_RDONLY = 0x1
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
AF_UNIX = 1
_PROC_FILES = ("cpuinfo", "meminfo")

HOST_HINT = (
    "Run the worker where unprivileged user namespaces are allowed (Docker: security_opt "
    "seccomp=unconfined and apparmor=unconfined; Ubuntu 23.10+: sysctl "
    "kernel.apparmor_restrict_unprivileged_userns=0), or set MODELHUB_SANDBOX=off to keep only the "
    "resource limits (weaker: a model's code could then reach the network and write files)."
)


class SandboxError(EngineError, RuntimeError):
    """The sandbox could not be entered; the message says why and what the host must allow."""


@dataclass(frozen=True)
class _Arch:
    mount_setattr: int
    open_tree: int
    move_mount: int
    capset: int
    socket: int
    audit_arch: int
    x32: bool  # x86_64 also accepts x32 system calls (number | 0x40000000), which the filter refuses


_ARCHES = {
    "x86_64": _Arch(mount_setattr=442, open_tree=428, move_mount=429, capset=126, socket=41,
                    audit_arch=0xC000003E, x32=True),
    "aarch64": _Arch(mount_setattr=442, open_tree=428, move_mount=429, capset=91, socket=198,
                     audit_arch=0xC00000B7, x32=False),
}
_ARCHES["amd64"] = _ARCHES["x86_64"]
_ARCHES["arm64"] = _ARCHES["aarch64"]


def enter(writable: list[Path]) -> None:
    """Confine this process (see the module docstring); every directory in ``writable`` must exist.

    Raises SandboxError, with the reason and what to change on the host, if any step fails; the
    process is then in an unknown state and must exit without loading anything.
    """
    arch = _arch()
    dirs = [os.path.realpath(path) for path in writable]
    for path in dirs:
        if not os.path.isdir(path):
            raise SandboxError(f"The sandbox's writable directory {path} does not exist.")
    _check_single_threaded()
    try:
        _confine(ctypes.CDLL(None, use_errno=True), arch, dirs)
    except OSError as exc:
        raise SandboxError(f"Cannot enter the sandbox: {exc}. {HOST_HINT}") from exc
    _verify(dirs)


def _confine(libc: ctypes.CDLL, arch: _Arch, dirs: list[str]) -> None:
    uid, gid = os.getuid(), os.getgid()
    _call(libc.unshare, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET, what="unshare(user, mount, network namespaces)")
    _map_ids(uid, gid)
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, "making the mount tree private")
    for path in dirs:
        _mount(libc, path, path, None, MS_BIND | MS_REC, f"bind-mounting {path}")
    _hide_proc(libc, arch)
    _set_readonly(libc, arch, "/", True)
    for path in dirs:
        _set_readonly(libc, arch, path, False)
    os.chdir(os.getcwd())  # the old cwd is the read-only mount under the new writable bind mount
    _drop_privileges(libc, arch)
    _forbid_unix_sockets(libc, arch)


def result_channel() -> TextIO:
    """For a child that reports one JSON line: a private copy of stdout for it, while stdout itself
    now goes to stderr, so that anything the model prints cannot forge the result."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel


def enter_or_refusal(writable: list[Path], *, enabled: bool) -> dict[str, Any] | None:
    """Enter the sandbox (unless ``enabled`` is false); the failure payload a child reports when it cannot."""
    if not enabled:
        return None
    try:
        enter(writable)
    except SandboxError as exc:
        return {"ok": False, "kind": "sandbox", "message": str(exc)}
    return None


def limit(*, memory_mb: int, cpu_seconds: int, file_bytes: int) -> None:
    """Resource limits of a child: address space, CPU time (SIGXCPU, then SIGKILL 5 s later), the
    size of any file it writes, and no core dumps. Set after ``enter`` (which needs no more)."""
    memory = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))


def _arch() -> _Arch:
    machine = platform.machine().lower()
    if platform.system() != "Linux" or machine not in _ARCHES:
        raise SandboxError(f"The sandbox needs Linux on x86_64 or aarch64; this is {platform.system()} "
                           f"on {machine or 'an unknown machine'}. {HOST_HINT}")
    return _ARCHES[machine]


def _check_single_threaded() -> None:
    """Say why early; the kernel would refuse anyway (unshare: EINVAL), with a less helpful message."""
    task = f"/proc/{os.getpid()}/task"  # not /proc/self: inside a sandbox that names the sandboxed parent
    threads = len(os.listdir(task)) if os.path.isdir(task) else 1
    if threads != 1:
        raise SandboxError(f"The sandbox must be entered before any thread starts; {threads} threads are "
                           "running (import numpy, torch and onnxruntime only after entering it).")


def _call(function: object, *args: object, what: str) -> int:
    result = function(*args)  # type: ignore[operator]
    if result == -1:
        _fail(what)
    return result


def _fail(what: str) -> None:
    """Raise the SandboxError of the C call that just failed (its errno)."""
    number = ctypes.get_errno()
    if number in (errno.EPERM, errno.EACCES, errno.ENOSPC) and what.startswith("unshare"):
        what += " (the host does not allow unprivileged user namespaces)"
    raise SandboxError(f"Cannot enter the sandbox: {what} failed: {os.strerror(number)}. {HOST_HINT}")


def _map_ids(uid: int, gid: int) -> None:
    """Map this user to root of the new namespace; setgroups must be denied before the gid map."""
    own = Path(f"/proc/{os.getpid()}")
    try:
        if (own / "setgroups").exists():  # kernels before 3.19 have no such file and need no denial
            (own / "setgroups").write_text("deny")
        (own / "uid_map").write_text(f"0 {uid} 1")
        (own / "gid_map").write_text(f"0 {gid} 1")
    except OSError as exc:
        raise SandboxError(f"Cannot enter the sandbox: writing the id maps failed: {exc.strerror}. {HOST_HINT}") from exc


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, what: str,
           data: str | None = None) -> None:
    texts = [text.encode() if text is not None else None for text in (source, target, fstype, data)]
    _call(libc.mount, *texts[:3], ctypes.c_ulong(flags), texts[3], what=what)


def _syscall(libc: ctypes.CDLL, number: int, *args: object, what: str) -> int:
    return _call(libc.syscall, ctypes.c_long(number), *args, what=what)


def _hide_proc(libc: ctypes.CDLL, arch: _Arch) -> None:
    """Cover /proc with an empty tmpfs, then put back this process's own /proc/<pid> and the few
    system-wide files that CPU feature detection reads (torch's and onnxruntime's cpuinfo)."""
    pid = str(os.getpid())
    kept = [name for name in (pid, *_PROC_FILES) if os.path.exists(f"/proc/{name}")]
    trees = {name: _syscall(libc, arch.open_tree, ctypes.c_int(AT_FDCWD), f"/proc/{name}".encode(),
                            ctypes.c_uint(OPEN_TREE_CLONE), what=f"cloning /proc/{name}") for name in kept}
    try:
        _mount(libc, "tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "covering /proc",
               data="size=16k,mode=0755")
        os.mkdir(f"/proc/{pid}")
        os.symlink(pid, "/proc/self")
        os.symlink(f"{pid}/task/{pid}", "/proc/thread-self")
        for name, tree in trees.items():
            if name != pid:
                Path(f"/proc/{name}").touch()
            _syscall(libc, arch.move_mount, ctypes.c_int(tree), b"", ctypes.c_int(AT_FDCWD), f"/proc/{name}".encode(),
                     ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH), what=f"mounting /proc/{name}")
    finally:
        for tree in trees.values():
            os.close(tree)


def _set_readonly(libc: ctypes.CDLL, arch: _Arch, path: str, readonly: bool) -> None:
    attr = struct.pack("=QQQQ", MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    buffer = ctypes.create_string_buffer(attr, len(attr))
    _syscall(libc, arch.mount_setattr, ctypes.c_int(AT_FDCWD), path.encode(), ctypes.c_uint(AT_RECURSIVE),
             buffer, ctypes.c_size_t(len(attr)),
             what=f"making {path} {'read-only' if readonly else 'writable'} (mount_setattr, Linux 5.12+)")


def _drop_privileges(libc: ctypes.CDLL, arch: _Arch) -> None:
    """No capabilities left, now or after an exec: the mounts above cannot be undone from inside."""
    _call(libc.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, what="clearing ambient capabilities")
    for capability in range(64):  # up to the kernel's last capability, which answers EINVAL after it
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) == -1:
            if ctypes.get_errno() == errno.EINVAL and capability > 0:
                break
            _fail("dropping the capability bounding set")
    header = ctypes.create_string_buffer(struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(bytes(24), 24)
    _syscall(libc, arch.capset, header, data, what="dropping capabilities")
    _call(libc.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, what="setting no_new_privs")


def _forbid_unix_sockets(libc: ctypes.CDLL, arch: _Arch) -> None:
    """A seccomp filter: socket(AF_UNIX, ...) fails with EPERM; system calls of another ABI fail too."""
    allow, deny = 0x7FFF0000, 0x00050000 | errno.EPERM
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    program = [(ld, 0, 0, 4), (jeq, 1, 0, arch.audit_arch), (ret, 0, 0, deny), (ld, 0, 0, 0)]
    if arch.x32:
        program += [(jge, 0, 1, 0x40000000), (ret, 0, 0, deny)]
    program += [(jeq, 0, 3, arch.socket), (ld, 0, 0, 16), (jeq, 0, 1, AF_UNIX), (ret, 0, 0, deny), (ret, 0, 0, allow)]
    filters = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters, len(filters))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    _call(libc.prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog_buffer, 0, 0, what="installing the seccomp filter")


def _verify(dirs: list[str]) -> None:
    if not os.statvfs("/").f_flag & os.ST_RDONLY:
        raise SandboxError("Cannot enter the sandbox: / is still writable after remounting it read-only.")
    for path in dirs:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            raise SandboxError(f"Cannot enter the sandbox: {path} is read-only inside it.")
