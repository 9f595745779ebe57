"""Set-up step: put the assets that don't ship as installable packages under the venv's share folder.

The GPT-2 tiktoken rank file ships inside the `openai-whisper` source distribution; we download that
sdist from the package index (no install) and extract just `whisper/assets/gpt2.tiktoken`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEST = Path(os.environ.get("LMFORGE_ASSETS", Path(sys.prefix) / "share" / "lmforge"))
MEMBER = "whisper/assets/gpt2.tiktoken"


def fetch_gpt2_tiktoken() -> Path:
    target = DEST / "gpt2.tiktoken"
    if target.exists():
        return target
    DEST.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*cmd, "-d", tmp, "openai-whisper==20250625"], check=True)
        (sdist,) = Path(tmp).glob("openai*whisper*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(MEMBER))
            data = tar.extractfile(member).read()
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


if __name__ == "__main__":
    print(f"gpt2.tiktoken -> {fetch_gpt2_tiktoken()}")
