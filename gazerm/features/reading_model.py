"""The default gaze predictor: a psycholinguistic reading-time model, embedded so nothing is downloaded.

``ReadingTimeModel`` is a regression model in the spirit of E-Z Reader (Reichle, Rayner & Pollatsek
2003) and SWIFT (Engbert et al. 2005), reduced to their word-level predictions: whether a word is
skipped, refixated, regressed from or reread, and how long its first fixation lasts, as functions of

- ``L``: word length in letters/digits (punctuation stripped);
- ``Z``: Zipf word frequency, ``wordfreq.zipf_frequency(word, "en")`` (log10 per billion words,
  3 ≈ rare, 7 ≈ "the"), cached per word;
- ``Zprev``: the preceding word's frequency (a hard previous word leaves less preview and spills
  over onto the next: Henderson & Ferreira 1990; Kliegl et al. 2006);
- position: sentence-initial words (rarely skipped), sentence- and text-final words (wrap-up:
  longer gaze and more regressions; Rayner, Kambe & Duffy 2000), and ``pred = min(k, 10) / 10``
  for the k-th word of a sentence, a crude stand-in for cloze predictability, which grows as
  context builds up (Kliegl et al. 2004).

Centred at ``L0 = 5`` and ``Z0 = 4``, with ``σ`` the logistic function:

====================  ============================================================================
P(skip)               ``σ(-1.8 - 0.4(L-L0) + 0.35(Z-Z0) + 0.1(Zprev-Z0) + 0.3 pred - 1.0 start)``;
                      0 for a text's first word
FFD (ms, if fixated)  ``max(100, 220 - 9(Z-Z0) - 4(Zprev-Z0) - 8 pred)``
P(refixation)         ``σ(-1.6 + 0.3(L-L0) - 0.2(Z-Z0))``, each refixation 175 ms
gaze duration         ``FFD + 175 P(refixation) + 40 end``
P(regression out)     ``σ(-2.4 - 0.15(Z-Z0) + 1.2 end)``, a regression path costing 300 ms
P(reread)             ``σ(-2.2 + 0.1(L-L0) - 0.2(Z-Z0))``, a rereading fixation of 200 ms
====================  ============================================================================

The outputs are expectations over readers, like measures averaged over the participants of a
corpus: ``fixProp = 1 - P(skip)(1 - P(reread))``, ``nFix = (1 - P(skip))(1 + P(refix)) + P(reread)``,
``GPT = (1 - P(skip))(gaze + 300 P(regression out))``, ``TRT = (1 - P(skip)) gaze + 200 P(reread)``,
and ``FFD`` is the duration given that the word is fixated (skipping is ``fixProp``'s job).
Punctuation-only tokens ("-", "—") are treated as a one-letter word of Zipf 7, like "a".

The coefficients are not fitted here: they were chosen to match the published effect sizes in
Rayner (1998; ~20-40 ms frequency effect on FFD, ~60 ms on gaze duration, function words skipped
~65% vs content words ~15%, 10-15% regressions), Brysbaert, Drieghe & Vitu (2005; skipping falls
from ~60-70% for 2-3-letter words to under 10% for 8+ letters), McConkie et al. (1989; refixation
probability rising from ~10% for short words to ~50% at 10 letters) and Kliegl et al. (2004;
frequency, length and predictability effects of similar size). They give plausible, monotone
features — the point for a reward model is that hard, long, rare words cost more reading time —
not a replacement for a predictor trained on recordings (``transformer``) or recordings themselves.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from wordfreq import zipf_frequency

from gazerm.features.base import WordGaze, normalise, word_spans

L0, Z0 = 5.0, 4.0
PUNCTUATION_WORD = (1.0, 7.0)  # (length, zipf) of a punctuation-only token
REFIX_MS, WRAPUP_MS, REGRESSION_PATH_MS, REREAD_MS = 175.0, 40.0, 300.0, 200.0
_CLOSERS = "\"')]}»”’*_"
_SENTENCE_END = (".", "!", "?")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@lru_cache(maxsize=1 << 20)
def _word_properties(token: str) -> tuple[float, float, float]:
    """(length, zipf, ends a sentence) of a whitespace token; cached, as real text repeats words."""
    letters = sum(ch.isalnum() for ch in token)
    ends_sentence = float(token.rstrip(_CLOSERS).endswith(_SENTENCE_END))
    if letters == 0:
        return (*PUNCTUATION_WORD, ends_sentence)
    core = "".join(ch for ch in token.lower() if ch.isalnum() or ch in "-'")
    return float(letters), zipf_frequency(core, "en"), ends_sentence


class ReadingTimeModel:
    """Word-level reading-time model; deterministic, vectorised over all words of a batch."""

    name = "reading_model-v1"

    def predict(self, texts: list[str]) -> list[WordGaze]:
        spans = [word_spans(text) for text in texts]
        counts = np.array([len(s) for s in spans], dtype=np.int64)
        properties = [
            _word_properties(text[a:b])
            for text, text_spans in zip(texts, spans, strict=True)
            for a, b in text_spans
        ]
        if not properties:
            return [WordGaze([], np.zeros((0, 5), np.float32)) for _ in texts]
        length, zipf, ends = np.array(properties, dtype=np.float64).T
        raw = self.raw_measures(length, zipf, ends.astype(bool), counts)
        return [
            WordGaze(s, f)
            for s, f in zip(spans, np.split(normalise(raw), np.cumsum(counts)[:-1]), strict=True)
        ]

    @staticmethod
    def raw_measures(
        length: np.ndarray, zipf: np.ndarray, ends: np.ndarray, counts: np.ndarray
    ) -> np.ndarray:
        """(n_words, 5) raw measures for the concatenated words of texts with ``counts`` words each."""
        n = len(length)
        text_starts = (np.cumsum(counts) - counts)[counts > 0]
        first = np.zeros(n, bool)
        first[text_starts] = True
        last = np.zeros(n, bool)
        last[text_starts + counts[counts > 0] - 1] = True
        end = ends | last
        start = first.copy()
        start[1:] |= end[:-1]
        index = np.arange(n)
        position = index - np.maximum.accumulate(np.where(start, index, 0))
        pred = np.minimum(position, 10) / 10.0
        zipf_prev = np.empty(n)
        zipf_prev[0] = Z0
        zipf_prev[1:] = zipf[:-1]
        zipf_prev[first] = Z0

        dl, dz, dz_prev = length - L0, zipf - Z0, zipf_prev - Z0
        p_skip = _sigmoid(-1.8 - 0.4 * dl + 0.35 * dz + 0.1 * dz_prev + 0.3 * pred - 1.0 * start)
        p_skip[first] = 0.0
        ffd = np.maximum(100.0, 220.0 - 9.0 * dz - 4.0 * dz_prev - 8.0 * pred)
        p_refix = _sigmoid(-1.6 + 0.3 * dl - 0.2 * dz)
        gaze = ffd + REFIX_MS * p_refix + WRAPUP_MS * end
        p_regress = _sigmoid(-2.4 - 0.15 * dz + 1.2 * end)
        p_reread = _sigmoid(-2.2 + 0.1 * dl - 0.2 * dz)

        p_first_pass = 1.0 - p_skip
        n_fix = p_first_pass * (1.0 + p_refix) + p_reread
        gpt = p_first_pass * (gaze + REGRESSION_PATH_MS * p_regress)
        trt = p_first_pass * gaze + REREAD_MS * p_reread
        fix_prop = 1.0 - p_skip * (1.0 - p_reread)
        return np.stack([n_fix, ffd, gpt, trt, fix_prop], axis=1)
