"""File helpers: atomic writes, JSON/history output, the provenance recorded beside every result, and the names of a
data folder's files."""
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from importlib import metadata
from pathlib import Path

IMAGES_FOLDER = "EyesDataset"  # a data folder's images; beside them its labels and the extra annotators' labels:
LABELS_NAME, ANNOTATIONS_NAME = "img_name_target.xlsx", "other_annotations.csv"
PACKAGES = ("eye-clf", "torch", "torchvision", "numpy", "scikit-learn", "pillow", "onnxruntime",
            "efficientnet-lite-pytorch")


def _umask():
    """The process umask, read without setting it where Linux allows (os.umask sets it for every thread at once,
    so a file another thread creates meanwhile would get the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration):  # not Linux, or a kernel before 4.7
        mask = os.umask(0)
        os.umask(mask)
        return mask


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path):
    """The hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class LockTimeout(TimeoutError):
    """Another process held the lock longer than ``locked``'s timeout; nothing was done."""


@contextmanager
def locked(path, timeout=None):
    """Hold an exclusive lock on ``path`` (through a ``.<name>.lock`` file beside it; symlinks followed) while the
    block runs, so that processes updating the same file take turns (POSIX flock; elsewhere no lock). With
    ``timeout`` (seconds) a lock still held by another after that long raises LockTimeout instead of waiting on."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = Path(os.path.realpath(path))
    lock_file = path.parent / f".{path.name}.lock"
    with open(lock_file, "a") as f:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{path} is being saved by another studio or program (it has held {lock_file} "
                                       f"for over {timeout:g} s)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _staged(path, write):
    """Call ``write(tmp_path)`` for a temporary file beside ``path``; yield the function that moves it into place."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)

    def move():
        os.replace(tmp, path)
        if os.name == "posix":  # the rename on disk too (a folder cannot be opened for that on Windows)
            _fsync_dir(path.parent)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the data is on disk before the rename makes it the file
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        yield move
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, write):
    """Call ``write(tmp_path)`` then move the file into place, so ``path`` is never half-written.

    The temporary file sits beside ``path`` (same file system); the result keeps the mode of the file it replaces.
    A symlink is followed: the file it points to is replaced, the link stays.
    """
    atomic_write_all([(path, write)])


def atomic_write_all(writes):
    """``atomic_write`` for several ``(path, write)`` pairs that belong together: every file is written before any
    is moved into place, so a failed write replaces none of them."""
    with ExitStack() as stack:
        for move in [stack.enter_context(_staged(path, write)) for path, write in writes]:
            move()


def write_json(path, obj, indent=None):
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=indent, default=str)))


def save_history(history, stem):
    """Write ``stem``.csv and ``stem``.json (one row per epoch)."""
    import pandas as pd
    atomic_write(f"{stem}.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
    write_json(f"{stem}.json", history, indent=1)


def is_checkout(folder):
    """Whether ``folder`` is an eye_clf checkout: its pyproject.toml names the eye-clf project."""
    try:
        return re.search(r'(?m)^name\s*=\s*"eye-clf"', (Path(folder) / "pyproject.toml").read_text()) is not None
    except OSError:
        return False


def checkout():
    """The eye_clf checkout this package belongs to, or None when it is installed (site-packages) or vendored into
    another project."""
    root = Path(__file__).resolve().parent.parent
    return root if is_checkout(root) else None


def _git(*args):
    """git's answer about the eye_clf checkout, or None: no git, or no checkout (installed, or vendored into another
    repository, whose commit would say nothing about this code)."""
    root = checkout()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=10) if root else None
        if top is None or top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model():
    """The CPU's model name ("model name" of /proc/cpuinfo on Linux, else what platform says; may be empty)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def provenance(device=None):
    """Where a result came from: git commit (and whether the tree had uncommitted changes), the command line,
    library versions and the machine (cores, CPU model, threads, ``device``: the torch device the result was computed
    on, by default CUDA when present, else the CPU; and the instruction set of torch's CPU kernels, which decides
    whether a training run on CPU repeats another's floats bit for bit)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    status = _git("status", "--porcelain", "--untracked-files=no")
    machine = dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(),
                   cpu=_cpu_model())
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        machine.update(torch_threads=torch.get_num_threads(),
                       device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                       cpu_capability=torch.backends.cpu.get_cpu_capability())  # its kernels: AVX2, AVX512, ...
    return dict(git_commit=_git("rev-parse", "HEAD"), git_dirty=bool(status) if status is not None else None,
                command=" ".join(sys.argv), versions=versions, machine=machine)
