"""What every benchmark script shares: the machine line, demo packs, and docs/benchmarks.md sections."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """``N cores (CPU), Python x.y.z``, for the header of a benchmark section."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores ({cpu_model()}), Python {platform.python_version()}"


def demo_pack(path: Path, count: int, size: int, seed: int = 0, proportions=(250.0, 40.0, 40.0)) -> Path:
    """A pack of ``count`` demo phantoms at ``size`` px, made the way users make one."""
    from pneumo.config import SplitConfig
    from pneumo.ingest.packer import make_demo_pack

    make_demo_pack(path, count=count, size=size, seed=seed, split=SplitConfig(proportions=proportions), force=True)
    return path


def write_section(section: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the markdown section that starts with the heading ``section`` by ``text``
    (which starts with that heading); a section not there yet is added at the end."""
    from pneumo._io import atomic_write_text

    doc = path.read_text(encoding="utf-8")
    if section not in doc:
        atomic_write_text(path, doc.rstrip() + "\n\n" + text.rstrip() + "\n")
        return
    start = doc.index(section)
    nxt = doc.find("\n## ", start + len(section))
    end = len(doc) if nxt < 0 else nxt + 1
    atomic_write_text(path, doc[:start] + text.rstrip() + "\n\n" + doc[end:])


def publish(section: str, lines: list[str], write_docs: bool) -> str:
    """Print a bench's section (``lines``, from its heading) and, with ``write_docs``, put it in
    docs/benchmarks.md in place of the section's previous figures. Returns the text."""
    text = "\n".join(lines)
    print(text)
    if write_docs:
        write_section(section, text)
    return text
