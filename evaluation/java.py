"""java: the Java tools pycocoevalcap ships (PTB tokenizer, METEOR 1.5), each started once per corpus."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from evaluation.errors import JavaError

# The tokenizer runs with -preserveLines: any character Java treats as a line break would shift every later
# caption onto the wrong image, so all of them become spaces (pycocoevalcap replaces only '\n').
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def java_available() -> bool:
    return shutil.which("java") is not None


def _require_java(tool: str) -> None:
    if not java_available():
        raise JavaError(f"{tool} needs Java on PATH; install it (apt-get install -y openjdk-17-jre-headless)")


def _ptb() -> tuple[Path, frozenset]:
    # Imported here, not at module level: the slim API image has no pycocoevalcap, yet loads this package.
    from pycocoevalcap.tokenizer import ptbtokenizer

    return (
        Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR),
        frozenset(ptbtokenizer.PUNCTUATIONS),
    )


def ptb_tokenize(sentences: Sequence[str], timeout_s: float = 600.0) -> list[str]:
    """PTB-tokenize, lower-case and drop punctuation exactly as pycocoevalcap's PTBTokenizer does.

    One JVM for the whole list (pycocoevalcap starts one per call, i.e. one for references and one for
    candidates). Blank sentences never reach Java and come back as "". Returns one string per input.
    """
    clean = [_LINE_BREAKS.sub(" ", s) for s in sentences]
    todo = [i for i, s in enumerate(clean) if s.strip()]
    out = [""] * len(clean)
    if not todo:
        return out
    _require_java("the PTB tokenizer")
    jar, punctuations = _ptb()
    # A temporary folder rather than pycocoevalcap's own (site-packages may be read-only in an image).
    with tempfile.TemporaryDirectory(prefix="capq-ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_text("\n".join(clean[i] for i in todo), encoding="utf-8")
        cmd = [
            "java",
            "-cp",
            str(jar),
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
            str(path),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise JavaError(f"the PTB tokenizer ran longer than {timeout_s:.0f}s on {len(todo)} sentences") from None
    if proc.returncode != 0:
        raise JavaError(
            f"the PTB tokenizer exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}"
        )
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(todo) or any(line.strip() for line in lines[len(todo) :]):
        raise JavaError(f"the PTB tokenizer returned {len(lines)} lines for {len(todo)} sentences")
    for i, line in zip(todo, lines):
        out[i] = " ".join(w for w in line.rstrip().split(" ") if w not in punctuations)
    return out


class MeteorProcess:
    """METEOR 1.5 through pycocoevalcap's wrapper; a context manager so the JVM (2 GB heap) always ends.

    Starting it loads a paraphrase table (about 10 s), so score several corpora with one process.
    """

    def __enter__(self) -> MeteorProcess:
        _require_java("METEOR")
        from pycocoevalcap.meteor.meteor import Meteor

        try:
            self._meteor = Meteor()
        except OSError as exc:
            raise JavaError(f"METEOR did not start ({exc}); run without --meteor") from exc
        return self

    def score(self, candidates: dict, references: dict) -> tuple[float, list[float]]:
        """(corpus METEOR, per-image METEOR) for tokenized {id: [candidate]} and {id: [refs]} with equal keys."""
        try:
            score, per_image = self._meteor.compute_score(references, candidates)
        except (ValueError, OSError) as exc:
            raise JavaError(f"METEOR failed ({type(exc).__name__}: {exc}); run without --meteor") from exc
        return float(score), [float(s) for s in per_image]

    def __exit__(self, *exc_info) -> None:
        meteor = self._meteor
        # The wrapper's __del__ takes its lock; after a failure mid-call that lock is still held and
        # garbage collection would hang, so give it a fresh one and end the process ourselves.
        meteor.lock = threading.Lock()
        proc = meteor.meteor_p
        if proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
        proc.kill()
        proc.wait()
