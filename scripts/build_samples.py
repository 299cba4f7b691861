"""Build the bundled offline samples and tiny model assets for the text-to-text recipes.

The toolkit's default summarization and translation runs must work on a machine with
no hub access, so this script writes, under ``accel_tasks/samples/``:

* ``summarization/{train,validation}.jsonl`` -- real English sentences from the CPython
  standard library installed here (docstrings, comments and the ``pydoc_data`` language
  reference, PSF License 2.0, copied alongside as ``LICENSE-PSF.txt``). A ``document`` is
  3-4 short prose sentences from one module, in source order; the ``summary`` is the first.
  Validation documents come from modules never used for training.
* ``translation/{train,validation}.jsonl`` -- random 3-8 word sentences over a self-written
  English->German lexicon, translated word for word (WMT/OPUS-style ``translation`` field).
* ``{summarization,translation}/model/`` -- a MarianMT ``config.json``, a
  ``generation_config.json`` and a fast BPE tokenizer trained on that recipe's train text.
  No weights: the toolkit builds the model with ``AutoModelForSeq2SeqLM.from_config``.
* ``{summarization,translation}/model_decoder_only/`` -- the same for a decoder-only model:
  a tiny Llama ``config.json`` (``AutoModelForCausalLM.from_config``), a
  ``generation_config.json`` and a byte-level BPE trained on the recipe's train text, with
  ChatML special tokens and chat template (Qwen2's, without a default system message).

Everything is seeded and written with sorted, stable JSON, so re-running with the same
CPython (the committed files came from 3.11.7) and ``tokenizers`` version reproduces the
committed files byte for byte. ``--check`` rebuilds into a temporary folder and compares.

Usage::

    python scripts/build_samples.py            # (re)write accel_tasks/samples/
    python scripts/build_samples.py --check    # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import json
import random
import re
import shutil
import sys
import sysconfig
import tempfile
import tokenize
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SEED = 1234
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "accel_tasks" / "samples"
PYTHON_USED = (3, 11, 7)  # the interpreter whose stdlib produced the committed files

# Special tokens, in id order (Marian convention: decoder start = pad).
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, EOS, UNK]
PAD_ID, EOS_ID = 0, 1

# --- summarization settings -------------------------------------------------------
SUM_TRAIN, SUM_VALIDATION = 3000, 100
SUM_VALIDATION_SHARE = 0.05  # of all prose sentences, held out by source module
SUM_SENTENCES = (3, 4)  # sentences per document; the summary is the first
SUM_MIN_SENTENCE_WORDS, SUM_MAX_SENTENCE_WORDS = 4, 15
SUM_MAX_WORDS = 50  # per document: ~70 tokens, well inside a 128-token source
SUM_VOCAB = 1024
SUM_MAX_SOURCE_TOKENS = 128  # including the appended </s>

# --- translation settings ---------------------------------------------------------
TR_TRAIN, TR_VALIDATION = 3000, 100
TR_MIN_WORDS, TR_MAX_WORDS = 3, 8
TR_VOCAB_LIMIT = 4000  # upper bound; BPE stops once every lexicon word is one token

MODEL_MAX_LENGTH = 256  # = max_position_embeddings

# --- decoder-only model assets (model_decoder_only/) --------------------------------
# ChatML special tokens as in Qwen2, in id order: <|endoftext|> pads, <|im_end|> ends a
# turn and is the eos token; there is no bos token.
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
DECODER_SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
DECODER_PAD_ID, DECODER_EOS_ID = 0, 2
# Qwen2's ChatML template without its default system message: only the given messages.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The instructions the learning check (and the toolkit's tiny preset) put around a source;
# their words are in the tokenizer's training text so the prompt markup is a few tokens.
DECODER_PROMPTS = {
    "summarization": "Summarize this document:\n{document}\nSummary:",
    "translation": "Translate this English text to German:\n{en}\nGerman:",
}
DECODER_VOCAB = 1536  # byte-level BPE, special tokens included
DECODER_MAX_LENGTH = 512  # = max_position_embeddings

# ==================================================================================
# Summarization: text extraction from the standard library
# ==================================================================================

# A stop after a lowercase letter, digit, bracket, quote or acronym ("... IDLE.").
_SENTENCE_SPLIT = re.compile(r"(?:(?<=[a-z0-9)\"'][.!?])|(?<=[A-Z]{2}[.!?]))\s+(?=[A-Z\"'])")
# Anything that marks code, markup or a URL rather than prose.
_CODE_LIKE = re.compile(
    r">>>|[{}\[\]<>=`|#\\@$%^~]|::|--|__|\.\.\.|https?:|\.py\b|\w/\w+/|\w\.\w+\.\w|\w\(\w"
    r"|(?<!\w)_\w|\w\.\w+\(|\b(?:XXX|TODO|FIXME|Copyright)\b"  # private names, calls, notes
)
# Abbreviations and initials would be cut into false sentences by the splitter; a stop
# followed by a space inside a "sentence" means the split went wrong somewhere.
_ABBREVIATION = re.compile(
    r"(?i:\b(?:e\.g|i\.e|eg|ie|etc|cf|vs|viz|approx|mr|mrs|dr|st|no)\.)"
    r"|\b[A-Z]\.\s|[.!?]\s+(?=[^A-Z\"'])"
)
_EMPHASIS = re.compile(r"\*\*?([^*]+)\*\*?")
_EXCLUDED_DIRS = {"site-packages", "test", "tests", "idle_test"}


@dataclass(frozen=True)
class Paragraph:
    """A prose paragraph and where it came from (for grouping and attribution)."""

    source: str
    text: str


def stdlib_root() -> Path:
    """The standard library of the running interpreter (PSF-licensed text)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*.py") if not _EXCLUDED_DIRS & set(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(source: str) -> Iterator[str]:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _comment_blocks(source: str) -> Iterator[str]:
    """Blocks of consecutive ``#`` comment lines; an empty ``#`` line ends a block."""
    block: list[str] = []
    for line in source.split("\n") + [""]:
        stripped = line.strip()
        body = stripped.lstrip("#").strip() if stripped.startswith("#") else None
        if body and not stripped.startswith("#!"):
            block.append(body)
            continue
        if block:
            yield "\n".join(block)
            block = []


def _split_paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated paragraphs, skipping indented (code / literal) blocks."""
    for chunk in re.split(r"\n\s*\n", text):
        lines = chunk.split("\n")
        if any(line.startswith((" ", "\t")) for line in lines):
            continue
        flat = re.sub(r"\s+", " ", " ".join(lines)).strip()
        flat = _EMPHASIS.sub(r"\1", flat)
        if flat:
            yield flat


def stdlib_paragraphs(root: Path | None = None) -> list[Paragraph]:
    """Prose paragraphs from stdlib docstrings, comments and the pydoc reference topics."""
    root = root or stdlib_root()
    out: list[Paragraph] = []
    for path in _stdlib_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            with tokenize.open(path) as fh:
                source = fh.read()
            docs = list(_docstrings(source))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few data files in the stdlib are not valid Python 3
        for text in docs + list(_comment_blocks(source)):
            out.extend(Paragraph(rel, p) for p in _split_paragraphs(text))
    topics_path = root / "pydoc_data" / "topics.py"
    if topics_path.exists():
        topics = ast.literal_eval(topics_path.read_text(encoding="utf-8").split("topics = ", 1)[1])
        for name in sorted(topics):
            out.extend(Paragraph(f"pydoc_data/topics.py:{name}", p) for p in _split_paragraphs(topics[name]))
    return out


def is_prose_sentence(sentence: str) -> bool:
    """True for a short plain-English sentence with no code markers."""
    words = len(sentence.split())
    return (
        SUM_MIN_SENTENCE_WORDS <= words <= SUM_MAX_SENTENCE_WORDS
        and sentence[-1] in ".!?"
        and (sentence[0].isupper() or sentence[0] in "\"'")  # not a fragment
        and sentence.isascii()
        and not _CODE_LIKE.search(sentence)
        and not _ABBREVIATION.search(sentence)
        and sentence.count('"') % 2 == 0
        and sentence.count("(") == sentence.count(")")
    )


def sentences_by_source(paragraphs: Iterable[Paragraph]) -> dict[str, list[str]]:
    """Prose sentences per source (module or reference topic), in source order.

    A sentence that occurs in several places is kept only at its first occurrence, so
    a train/validation split by source never shares a sentence.
    """
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for para in paragraphs:
        for sentence in _SENTENCE_SPLIT.split(para.text):
            if sentence not in seen and is_prose_sentence(sentence):
                seen.add(sentence)
                out.setdefault(para.source, []).append(sentence)
    return {src: sents for src, sents in out.items() if len(sents) >= max(SUM_SENTENCES)}


def sample_documents(
    sources: dict[str, list[str]], n: int, rng: random.Random, unique_summaries: bool
) -> list[tuple[str, ...]]:
    """``n`` distinct documents of 3-4 sentences from one source each, in source order.

    Sources are drawn in proportion to their sentence count; each document is a random
    ordered subset of one module's sentences, so it stays on one topic while the set
    of documents is large enough that a tiny model must learn to copy, not memorise.
    """
    names = sorted(sources)
    weights = [len(sources[name]) for name in names]
    docs: list[tuple[str, ...]] = []
    seen: set[tuple[str, ...]] = set()
    summaries: set[str] = set()
    for _ in range(n * 100):
        if len(docs) == n:
            return docs
        sents = sources[rng.choices(names, weights)[0]]
        picks = sorted(rng.sample(range(len(sents)), rng.choice(SUM_SENTENCES)))
        doc = tuple(sents[k] for k in picks)
        if (
            sum(len(s.split()) for s in doc) > SUM_MAX_WORDS
            or doc in seen
            or (unique_summaries and doc[0] in summaries)
        ):
            continue
        seen.add(doc)
        summaries.add(doc[0])
        docs.append(doc)
    raise ValueError(
        f"could only build {len(docs)} of {n} summarization documents from "
        f"{len(sources)} stdlib sources; this script was tuned on CPython 3.11.7"
    )


def summarization_splits(
    paragraphs: Iterable[Paragraph], rng: random.Random
) -> tuple[list[dict], list[dict], Tokenizer]:
    """Train/validation records and the tokenizer trained on the train documents.

    Validation documents come from held-out sources (modules), unseen in train.
    """
    sources = sentences_by_source(paragraphs)
    names = sorted(sources)
    rng.shuffle(names)
    total = sum(len(v) for v in sources.values())
    val_names: list[str] = []
    while sum(len(sources[n]) for n in val_names) < SUM_VALIDATION_SHARE * total:
        val_names.append(names[len(val_names)])
    train_names = names[len(val_names) :]
    if len(val_names) < 5 or len(train_names) < 50:
        raise ValueError(
            f"only {len(sources)} stdlib sources with enough prose under {stdlib_root()}; "
            "run this script with a full CPython install (3.11.7 built the committed files)"
        )
    # Sample a margin, train the tokenizer on the train text, then drop the few
    # identifier-heavy documents that would not fit the source budget.
    validation = sample_documents({n: sources[n] for n in val_names}, SUM_VALIDATION * 2, rng, unique_summaries=True)
    train = sample_documents({n: sources[n] for n in train_names}, SUM_TRAIN * 21 // 20, rng, unique_summaries=False)
    tok = train_tokenizer(
        (" ".join(d) for d in train),
        vocab_size=SUM_VOCAB,
        alphabet=[chr(c) for c in range(32, 127)],  # the sample is ASCII-only
    )

    def fitting(docs: list[tuple[str, ...]], n: int) -> list[tuple[str, ...]]:
        kept = [d for d in docs if len(tok.encode(" ".join(d)).ids) <= SUM_MAX_SOURCE_TOKENS]
        if len(kept) < n:
            raise ValueError(f"only {len(kept)} of {n} documents fit {SUM_MAX_SOURCE_TOKENS} tokens")
        return kept[:n]

    train, validation = fitting(train, SUM_TRAIN), fitting(validation, SUM_VALIDATION)

    def records(split: str, docs: list[tuple[str, ...]]) -> list[dict]:
        return [{"id": f"sum-{split}-{i:05d}", "document": " ".join(d), "summary": d[0]} for i, d in enumerate(docs)]

    return records("train", train), records("validation", validation), tok


# ==================================================================================
# Translation: a self-written English -> German lexicon
# ==================================================================================

# Written for this project (same licence as the project). One German word per English
# word and vice versa, so a word-for-word mapping is a well-defined target.
LEXICON_TEXT = """
house Haus|dog Hund|cat Katze|tree Baum|car Auto|book Buch|table Tisch|chair Stuhl
door Tür|window Fenster|water Wasser|bread Brot|milk Milch|apple Apfel|fish Fisch
bird Vogel|horse Pferd|cow Kuh|mouse Maus|city Stadt|village Dorf|street Straße
school Schule|church Kirche|garden Garten|flower Blume|forest Wald|mountain Berg
river Fluss|lake See|sea Meer|sun Sonne|moon Mond|star Stern|sky Himmel|rain Regen
snow Schnee|wind Wind|fire Feuer|stone Stein|day Tag|night Nacht|morning Morgen
evening Abend|week Woche|month Monat|year Jahr|hour Stunde|minute Minute|time Zeit
man Mann|woman Frau|child Kind|father Vater|mother Mutter|brother Bruder
sister Schwester|friend Freund|teacher Lehrer|doctor Arzt|king König|queen Königin
hand Hand|head Kopf|eye Auge|ear Ohr|mouth Mund|nose Nase|heart Herz|foot Fuß
arm Arm|hair Haar|name Name|word Wort|letter Brief|language Sprache|song Lied
picture Bild|money Geld|work Arbeit|game Spiel|meal Mahlzeit|kitchen Küche
room Zimmer|bed Bett|floor Boden|wall Wand|roof Dach|key Schlüssel|box Kiste
bottle Flasche|glass Glas|cup Tasse|plate Teller|knife Messer|spoon Löffel
fork Gabel|shoe Schuh|shirt Hemd|hat Hut|coat Mantel|train Zug|ship Schiff
boat Boot|plane Flugzeug|bicycle Fahrrad|path Weg|bridge Brücke|island Insel
country Land|world Welt|earth Erde|field Feld|farm Bauernhof|shop Laden
market Markt|office Büro|bank Bank|hospital Krankenhaus|station Bahnhof
paper Papier|pen Stift|clock Uhr|phone Telefon|question Frage|answer Antwort
idea Idee|story Geschichte|music Musik|colour Farbe|egg Ei|cheese Käse|meat Fleisch
salt Salz|sugar Zucker|coffee Kaffee|tea Tee|wine Wein|beer Bier|soup Suppe
cake Kuchen|winter Winter|summer Sommer|spring Frühling|autumn Herbst|leaf Blatt
grass Gras|sand Sand|ice Eis|cloud Wolke|bell Glocke|neighbour Nachbar
go gehen|come kommen|see sehen|hear hören|eat essen|drink trinken|sleep schlafen
run laufen|walk spazieren|swim schwimmen|fly fliegen|read lesen|write schreiben
speak sprechen|say sagen|ask fragen|sing singen|dance tanzen|play spielen
learn lernen|teach lehren|know wissen|think denken|believe glauben|love lieben
like mögen|want wollen|need brauchen|give geben|take nehmen|bring bringen
buy kaufen|sell verkaufen|pay bezahlen|open öffnen|close schließen|find finden
lose verlieren|win gewinnen|help helfen|wait warten|sit sitzen|stand stehen
live leben|cook kochen|wash waschen|build bauen|draw zeichnen|paint malen
laugh lachen|cry weinen|call rufen|send schicken|show zeigen|begin beginnen
stop anhalten|travel reisen|drive fahren|ride reiten|carry tragen|throw werfen
catch fangen|hold halten|fall fallen|climb klettern|jump springen|listen zuhören
look schauen|forget vergessen|remember erinnern|understand verstehen|try versuchen
count zählen|big groß|small klein|old alt|new neu|young jung|good gut|bad schlecht
long lang|short kurz|high hoch|low niedrig|hot heiß|cold kalt|warm warm|cool kühl
fast schnell|slow langsam|happy glücklich|sad traurig|beautiful schön
ugly hässlich|rich reich|strong stark|weak schwach|heavy schwer|easy einfach
difficult schwierig|dirty schmutzig|full voll|empty leer|dark dunkel|bright hell
quiet leise|loud laut|wet nass|dry trocken|sweet süß|sour sauer|bitter bitter
fresh frisch|early früh|late spät|near nah|far weit|wide breit|narrow eng
thick dick|thin dünn|round rund|soft weich|clever klug|stupid dumm|brave mutig
friendly freundlich|angry wütend|tired müde|hungry hungrig|thirsty durstig
sick krank|healthy gesund|free frei|busy beschäftigt|red rot|blue blau|green grün
yellow gelb|black schwarz|white weiß|brown braun|grey grau|pink rosa
yesterday gestern|now jetzt|always immer|never nie|often oft|sometimes manchmal
here hier|there dort|very sehr|also auch|again wieder|soon bald|only nur
still noch|already schon|together zusammen|and und|or oder|but aber|with mit
without ohne|for für|from von|in in|on auf|under unter|over über|behind hinter
between zwischen|before vor|after nach|yes ja|no nein|not nicht|I ich|you du
he er|she sie|we wir|it es|my mein|your dein|his sein|our unser|who wer|what was
where wo|when wann|why warum|how wie|one eins|two zwei|three drei|four vier
five fünf|six sechs|seven sieben|eight acht|nine neun|ten zehn|eleven elf
twelve zwölf|twenty zwanzig|hundred hundert|thousand tausend
"""


def lexicon() -> list[tuple[str, str]]:
    """The English->German word pairs, checked to be a one-to-one mapping."""
    pairs = [tuple(item.split(" ")) for line in LEXICON_TEXT.strip().splitlines() for item in line.split("|")]
    bad = [" ".join(p) for p in pairs if len(p) != 2]
    if bad:
        raise ValueError(f"lexicon entries must be 'english German' separated by '|': {bad}")
    dupes = sorted(word for side in (0, 1) for word, n in Counter(p[side] for p in pairs).items() if n > 1)
    if dupes:
        raise ValueError(
            f"the lexicon must map each English word to a distinct German word; used more than once: {dupes}"
        )
    return [(e, d) for e, d in pairs]


def translation_splits(pairs: Sequence[tuple[str, str]], rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Random 3-8 word sentences (no repeated word) and their word-for-word German."""
    seen: set[tuple[int, ...]] = set()

    def sentences(n: int, split: str) -> list[dict]:
        out = []
        while len(out) < n:
            length = rng.randint(TR_MIN_WORDS, TR_MAX_WORDS)
            idx = tuple(rng.sample(range(len(pairs)), length))
            if idx in seen:
                continue
            seen.add(idx)
            out.append(
                {
                    "id": f"tr-{split}-{len(out):05d}",
                    "translation": {
                        "en": " ".join(pairs[i][0] for i in idx),
                        "de": " ".join(pairs[i][1] for i in idx),
                    },
                }
            )
        return out

    validation = sentences(TR_VALIDATION, "validation")
    train = sentences(TR_TRAIN, "train")
    return train, validation


# ==================================================================================
# Tokenizers and model configs
# ==================================================================================


def train_tokenizer(texts: Iterable[str], vocab_size: int, alphabet: Sequence[str]) -> Tokenizer:
    """A Metaspace BPE tokenizer (exact round trip) that appends </s> like Marian."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=list(alphabet),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    if [tok.token_to_id(t) for t in SPECIAL_TOKENS] != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError("special tokens did not get ids 0..2; the tokenizers API changed")
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, EOS_ID)]
    )
    return tok


def marian_config(vocab_size: int) -> dict:
    """The tiny MarianMT config measured to learn both sample tasks on 2 CPU cores."""
    from transformers import MarianConfig

    config = MarianConfig(
        vocab_size=vocab_size,
        decoder_vocab_size=vocab_size,
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=512,
        decoder_ffn_dim=512,
        max_position_embeddings=MODEL_MAX_LENGTH,
        # Measured: with dropout 0.1 or init_std 0.02 the tiny model only learns
        # unigram statistics in the first ~600 steps; with these it copies/translates.
        dropout=0.0,
        init_std=0.1,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        forced_eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
        architectures=["MarianMTModel"],
    )
    data = config.to_dict()
    # Version stamps would make the file change with every transformers release.
    data.pop("transformers_version", None)
    return data


def generation_config(max_new_tokens: int) -> dict:
    """Greedy decoding defaults with the Marian special-token ids.

    ``max_new_tokens``, not ``max_length``: the recipes pass ``generation.max_new_tokens`` and
    transformers warns on every generate call when a config sets both."""
    return {
        "decoder_start_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "forced_eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "max_new_tokens": max_new_tokens,
        "num_beams": 1,
    }


def tokenizer_config() -> dict:
    """What ``AutoTokenizer.from_pretrained`` needs besides tokenizer.json."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": PAD,
        "eos_token": EOS,
        "unk_token": UNK,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
    }


# ==================================================================================
# Decoder-only (causal LM) assets
# ==================================================================================


def train_decoder_tokenizer(texts: Iterable[str], vocab_size: int = DECODER_VOCAB) -> Tokenizer:
    """A byte-level BPE (GPT-2 / Qwen2 style) with the ChatML special tokens and no post-processor.

    Byte level, not Metaspace: a text encodes to the same tokens on its own as inside a prompt
    (a word after ``\\n`` or at the start of a text never gets a space marker), which the
    toolkit relies on when it encodes the prompt pieces and the source separately; and
    ``decode(encode(text))`` is the text for any string, with no unknown token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=DECODER_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    if [tok.token_to_id(t) for t in DECODER_SPECIAL_TOKENS] != list(range(len(DECODER_SPECIAL_TOKENS))):
        raise RuntimeError("special tokens did not get ids 0..2; the tokenizers API changed")
    return tok


def decoder_prompt_words(recipe: str) -> list[str]:
    """The fixed text of a recipe's chat prompt (the instruction around the source, the role lines)."""
    instruction = DECODER_PROMPTS[recipe]
    return [part for part in re.split(r"\{\w+\}", instruction) if part] + ["user\n", "assistant\n", "system\n"]


def check_round_trip(tok: Tokenizer, texts: Sequence[str]) -> None:
    """``decode(encode(text))`` must give each text back, alone and after a newline, and a text
    after ``Summary:\\n`` must encode to the prefix's tokens followed by the text's own."""

    def ids(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    prefix = "Summary:\n"
    for text in texts:
        for variant in (text, prefix + text, "\n" + text + "\n"):
            back = tok.decode(ids(variant), skip_special_tokens=True)
            if back != variant:
                raise RuntimeError(f"the decoder-only tokenizer does not round-trip {variant!r}: {back!r}")
        if ids(prefix + text) != ids(prefix) + ids(text):
            raise RuntimeError(f"{text!r} encodes differently after a newline than alone")


def llama_config(vocab_size: int) -> dict:
    """The tiny LlamaConfig (random init, no weights) measured to learn both sample tasks on one CPU thread."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=DECODER_MAX_LENGTH,
        initializer_range=0.02,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=DECODER_EOS_ID,
        pad_token_id=DECODER_PAD_ID,
        architectures=["LlamaForCausalLM"],
    )
    data = config.to_dict()
    data.pop("transformers_version", None)
    return data


def decoder_generation_config(max_new_tokens: int) -> dict:
    """Greedy decoding that stops at ``<|im_end|>`` (a list, as chat models write it)."""
    return {
        "bos_token_id": None,
        "do_sample": False,
        "eos_token_id": [DECODER_EOS_ID],
        "max_new_tokens": max_new_tokens,
        "num_beams": 1,
        "pad_token_id": DECODER_PAD_ID,
    }


def decoder_tokenizer_config() -> dict:
    """tokenizer_config.json of the decoder-only folder: ChatML template, left padding for generation."""
    return {
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "model_max_length": DECODER_MAX_LENGTH,
        "pad_token": ENDOFTEXT,
        "padding_side": "left",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def write_decoder_model_dir(path: Path, recipe: str, texts: Sequence[str], max_new_tokens: int) -> dict:
    """``model_decoder_only/``: Llama config, generation config, byte-level BPE + ChatML template; no weights."""
    # The prompt text counts once per example, as often as a fine-tuning run reads it, so
    # its words become single tokens and the fixed prompt markup stays short.
    tok = train_decoder_tokenizer([*texts, *decoder_prompt_words(recipe) * (len(texts) // 2)])
    check_round_trip(tok, texts[:200])
    for token, token_id in ((ENDOFTEXT, DECODER_PAD_ID), (IM_END, DECODER_EOS_ID)):
        if tok.token_to_id(token) != token_id:
            raise RuntimeError(f"{token} is not id {token_id}")
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", llama_config(tok.get_vocab_size()))
    write_json(path / "generation_config.json", decoder_generation_config(max_new_tokens))
    write_json(path / "tokenizer_config.json", decoder_tokenizer_config())
    _write_text(path / "tokenizer.json", tok.to_str(pretty=True) + "\n")
    return {"vocab": tok.get_vocab_size(), "longest_text_tokens": max(len(tok.encode(t).ids) for t in texts)}


# ==================================================================================
# Writing
# ==================================================================================


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def write_json(path: Path, data: dict) -> None:
    """Stable, human-readable JSON (sorted keys, UTF-8, trailing newline)."""
    _write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """One JSON object per line, keys in insertion order."""
    _write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_model_dir(path: Path, tok: Tokenizer, max_target_length: int) -> None:
    """config.json + generation_config.json + tokenizer files; no weights."""
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", marian_config(tok.get_vocab_size()))
    write_json(path / "generation_config.json", generation_config(max_new_tokens=max_target_length))
    write_json(path / "tokenizer_config.json", tokenizer_config())
    # tokenizer.json is serialised by the tokenizers library itself (stable for a version).
    _write_text(path / "tokenizer.json", tok.to_str(pretty=True) + "\n")


def copy_psf_license(dest: Path) -> None:
    """Ship the Python licence with the text taken from the stdlib (PSF-2.0 clause 2)."""
    src = stdlib_root() / "LICENSE.txt"
    if not src.is_file():
        raise ValueError(
            f"{src} is missing; the summarization sample quotes the standard library and "
            "must ship its licence: run this script with a full CPython install"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def build_summarization(out: Path) -> dict:
    """Write the summarization sample and model dir; return a few counts."""
    rng = random.Random(SEED)
    train, validation, tok = summarization_splits(stdlib_paragraphs(), rng)
    longest = max(len(tok.encode(r["document"]).ids) for r in train + validation)
    if longest > SUM_MAX_SOURCE_TOKENS:
        raise RuntimeError(f"a document has {longest} tokens; lower SUM_MAX_WORDS")
    write_jsonl(out / "summarization" / "train.jsonl", train)
    write_jsonl(out / "summarization" / "validation.jsonl", validation)
    write_model_dir(out / "summarization" / "model", tok, max_target_length=64)
    copy_psf_license(out / "summarization" / "LICENSE-PSF.txt")
    decoder = write_decoder_model_dir(
        out / "summarization" / "model_decoder_only",
        "summarization",
        [r["document"] for r in train] + [r["summary"] for r in train],
        max_new_tokens=64,
    )
    return {
        "train": len(train),
        "validation": len(validation),
        "vocab": tok.get_vocab_size(),
        "longest_source_tokens": longest,
        "decoder_only": decoder,
    }


def build_translation(out: Path) -> dict:
    """Write the translation sample and model dir; return a few counts."""
    rng = random.Random(SEED)
    pairs = lexicon()
    train, validation = translation_splits(pairs, rng)
    words = sorted({w for pair in pairs for w in pair})
    alphabet = sorted({ch for w in words for ch in w})
    tok = train_tokenizer(words, vocab_size=TR_VOCAB_LIMIT, alphabet=alphabet)
    split_words = [w for w in words if len(tok.encode(w, add_special_tokens=False).ids) != 1]
    if split_words:
        raise RuntimeError(f"lexicon words not single tokens: {split_words[:10]}")
    write_jsonl(out / "translation" / "train.jsonl", train)
    write_jsonl(out / "translation" / "validation.jsonl", validation)
    write_model_dir(out / "translation" / "model", tok, max_target_length=32)
    decoder = write_decoder_model_dir(
        out / "translation" / "model_decoder_only",
        "translation",
        [r["translation"]["en"] for r in train] + [r["translation"]["de"] for r in train],
        max_new_tokens=32,
    )
    return {
        "train": len(train),
        "validation": len(validation),
        "vocab": tok.get_vocab_size(),
        "lexicon": len(pairs),
        "decoder_only": decoder,
    }


def build_all(out: Path) -> dict:
    """Build both recipes' samples under ``out``."""
    return {"summarization": build_summarization(out), "translation": build_translation(out)}


GENERATED = [
    f"{recipe}/{name}"
    for recipe in ("summarization", "translation")
    for name in (
        "train.jsonl",
        "validation.jsonl",
        *(
            f"{model}/{file}"
            for model in ("model", "model_decoder_only")
            for file in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
        ),
    )
] + ["summarization/LICENSE-PSF.txt"]


def check(out: Path) -> list[str]:
    """Rebuild into a temp dir; return the generated files that differ from ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        build_all(fresh)
        return [
            n
            for n in GENERATED
            if not (fresh / n).is_file()
            or not (out / n).is_file()
            or not filecmp.cmp(fresh / n, out / n, shallow=False)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="samples folder")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if sys.version_info[:3] != PYTHON_USED:
        print(
            f"note: the committed samples came from CPython {'.'.join(map(str, PYTHON_USED))}; "
            f"this is {sys.version.split()[0]}, so the summarization text may differ",
            file=sys.stderr,
        )
    if args.check:
        diff = check(args.out)
        for name in diff:
            print(f"differs: {name}")
        print("samples are up to date" if not diff else f"{len(diff)} file(s) differ")
        return 1 if diff else 0
    print(json.dumps(build_all(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
