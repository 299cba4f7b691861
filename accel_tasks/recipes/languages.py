"""Language tables and tokenizer language codes for translation: T5 task prefixes and the codes of
mBART / mBART-50 / NLLB / M2M100 tokenizers (en -> en_XX, eng_Latn, en).

Why a module of its own: these tables are data about languages and tokenizers, not task logic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from accel_tasks.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


# ISO 639-1 code -> (English name, for T5 prefixes; ISO 639-3 code, for NLLB-style codes such as eng_Latn).
LANGUAGES: dict[str, tuple[str, str]] = {
    "ar": ("Arabic", "arb"),
    "bg": ("Bulgarian", "bul"),
    "cs": ("Czech", "ces"),
    "da": ("Danish", "dan"),
    "de": ("German", "deu"),
    "el": ("Greek", "ell"),
    "en": ("English", "eng"),
    "es": ("Spanish", "spa"),
    "et": ("Estonian", "est"),
    "fi": ("Finnish", "fin"),
    "fr": ("French", "fra"),
    "gu": ("Gujarati", "guj"),
    "hi": ("Hindi", "hin"),
    "hu": ("Hungarian", "hun"),
    "it": ("Italian", "ita"),
    "ja": ("Japanese", "jpn"),
    "kk": ("Kazakh", "kaz"),
    "ko": ("Korean", "kor"),
    "lt": ("Lithuanian", "lit"),
    "lv": ("Latvian", "lvs"),
    "nl": ("Dutch", "nld"),
    "pl": ("Polish", "pol"),
    "pt": ("Portuguese", "por"),
    "ro": ("Romanian", "ron"),
    "ru": ("Russian", "rus"),
    "sv": ("Swedish", "swe"),
    "tr": ("Turkish", "tur"),
    "uk": ("Ukrainian", "ukr"),
    "vi": ("Vietnamese", "vie"),
    "zh": ("Chinese", "zho"),
}


# Model types pre-trained with "translate X to Y: " prefixes.
T5_MODEL_TYPES = ("t5",)


def language_codes(tokenizer: PreTrainedTokenizerBase) -> Optional[list[str]]:
    """The language codes of a tokenizer that marks languages with special tokens, or None for other tokenizers.

    mBART / mBART-50 / M2M100 expose ``lang_code_to_id``; NLLB keeps its codes among the extra special tokens.
    """
    if not hasattr(tokenizer, "set_src_lang_special_tokens"):
        return None
    mapping = getattr(tokenizer, "lang_code_to_token", None) or getattr(tokenizer, "lang_code_to_id", None)
    if mapping:
        return list(mapping)
    extra = (
        getattr(tokenizer, "extra_special_tokens", None) or getattr(tokenizer, "additional_special_tokens", None) or []
    )
    if isinstance(extra, dict):
        extra = list(extra.values())
    unk = tokenizer.unk_token_id
    return [str(t) for t in extra if tokenizer.convert_tokens_to_ids(str(t)) != unk]


def language_code_id(tokenizer: PreTrainedTokenizerBase, code: str) -> int:
    """Token id of a language code (M2M100 maps ``en`` to the token ``__en__``)."""
    mapping = getattr(tokenizer, "lang_code_to_id", None)
    if mapping and code in mapping:
        return int(mapping[code])
    return int(tokenizer.convert_tokens_to_ids(code))


def pick_language_code(
    codes: list[str], explicit: Optional[str], language: Optional[str], side: str, tokenizer_name: str
) -> str:
    """The tokenizer's code for one side: task.<side>_lang_code, else the code matching task.<side>_lang."""
    option = f"task.{side}_lang_code"
    known = ", ".join(codes)
    if explicit is not None:
        if explicit not in codes:
            raise ConfigError(
                f"{option}={explicit!r} is not a language code of the {tokenizer_name} tokenizer; it knows: {known}"
            )
        return explicit
    if language is None:
        raise ConfigError(
            f"the {tokenizer_name} tokenizer needs a {side} language code: set task.{side}_lang or {option} "
            f"(codes it knows: {known})"
        )
    if language in codes:
        return language
    stems = {language.lower()}
    if language.lower() in LANGUAGES:
        stems.add(LANGUAGES[language.lower()][1])
    matches = [code for code in codes if code.split("_")[0].lower() in stems]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(
            f"task.{side}_lang={language!r} matches several codes of the {tokenizer_name} tokenizer "
            f"({', '.join(matches)}); set {option} to one of them"
        )
    raise ConfigError(
        f"task.{side}_lang={language!r} is not a language code of the {tokenizer_name} tokenizer and matches none; "
        f"set {option} to one of: {known}"
    )


def default_prefix(model_type: Optional[str], source_lang: Optional[str], target_lang: Optional[str]) -> Optional[str]:
    """The T5 task prefix for a language pair; None when the model is not T5 or a language has no known name."""
    if model_type not in T5_MODEL_TYPES:
        return None
    names = [LANGUAGES.get((lang or "").lower(), (None,))[0] for lang in (source_lang, target_lang)]
    if None in names:
        return None
    return f"translate {names[0]} to {names[1]}: "


def language_name(lang: Optional[str]) -> Optional[str]:
    """The English name of a language key (en -> English), or None when it is not known."""
    return LANGUAGES.get((lang or "").lower(), (None,))[0]
