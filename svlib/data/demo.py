"""The offline demo corpus: real human recordings from Debian ``main`` packages, as Kaldi data directories.

The ``demo`` profile needs speech from a few dozen people without downloading VoxCeleb. Debian ships such
recordings: the letters and syllables of KLettres (``klettres-data``), the words of KTuberling (``ktuberling-data``)
and the telephone prompts of Asterisk (``asterisk-core-sounds-*-g722`` and three ``asterisk-prompt-*`` voices).
:func:`build_demo_corpus` turns them into a small speaker-verification corpus:

1. fetch the packages (:func:`svlib.data.debian.fetch_debian_package`: ``apt-get download`` + ``dpkg -x``);
2. for each recording session (:data:`SOURCES`), list its clips, shuffle them with a fixed seed, decode them
   (libsndfile for Ogg Vorbis/Opus/WAV and raw GSM 6.10, the ``G722`` package for Asterisk's raw G.722 at
   16 kHz / 64 kbit/s; ``sox`` as a fallback if libsndfile fails), trim leading and trailing silence, keep clips of
   0.3–3 s, resample to 16 kHz, until the speaker's speech budget is reached;
3. concatenate consecutive clips (at least 3, at least 4 s of speech, 0.1 s pauses) into utterances written as
   16-bit WAV files ``wav/<spk>/<session>/<nnnnn>.wav``; utterance ids are ``<spk>/<session>/<nnnnn>``, the
   VoxCeleb ``<spk>/<video>/<nnnnn>`` style;
4. drop speakers with fewer than 3 utterances, split the speakers (fixed seed) into disjoint ``train`` and ``test``
   sets, and write the Kaldi data directories, a balanced Kaldi trial list over ``test`` and a README that lists
   each package, its version, its license and the speakers it contributes.

**Who is who.** Speaker labels follow what the packages themselves say (credits in the DocBook manuals,
``copyright`` files, Asterisk's ``<lang>_<COUNTRY>_<gender>_<Name>`` folder names, Vorbis ``artist`` tags); the
evidence is recorded per source in :data:`SOURCES`, the merges in :data:`SPEAKER_MERGES` and the same-language
pairs that were checked in :data:`SAME_LANGUAGE_PAIRS`. Where the packages cannot tell whether a KLettres and a
KTuberling voice of one language are the same person, both get a common ``group`` and the group is kept out of the
test split, so the split stays speaker-disjoint and the trials stay correctly labelled either way. Only voices
that their package attributes to exactly one named person are test candidates.

The corpus is cached under ``<root>/demo`` with a finished marker: a second call returns the stored
:class:`CorpusSummary` at once.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from svlib.frontend.audio import AudioError, save_audio
from svlib.data.debian import _trim_silence, copyright_stanza, debian_package_version, fetch_debian_package
from svlib.core.atomic import file_lock
from svlib.core.progress import progress_bar
from svlib.core.paths import default_data_root
from svlib.data.lists import DataDir, Trial, TrialList, write_data_dir, write_lines_atomic, write_trials

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_RECIPE_VERSION",
    "SAME_LANGUAGE_PAIRS",
    "SOURCES",
    "SPEAKER_MERGES",
    "CorpusSummary",
    "DemoCorpusConfig",
    "SpeakerInfo",
    "SplitSummary",
    "VoiceSource",
    "build_demo_corpus",
    "decode_clip",
    "demo_packages",
    "make_trials",
    "pack_clips",
    "split_speakers",
]

DEMO_RECIPE_VERSION = 2
"""Bumped whenever the recipe changes what is built; a cached corpus of another version is rebuilt."""

SAMPLE_RATE = 16000
_MARKER = ".svlib-finished"


# ---------------------------------------------------------------------------------------------------------------
# the sources and the evidence for who is speaking
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceSource:
    """One recording session of one speaker inside a Debian package.

    Attributes:
        speaker: speaker label after merging (sources of one person share it; see :data:`SPEAKER_MERGES`).
        session: session name, unique per speaker: the ``<video>`` part of utterance ids.
        package: Debian package (``main``) holding the clips.
        folder: folder inside the unpacked package, searched recursively (symbolic links are not followed).
        suffix: file extension of the clips (``.ogg``, ``.wav``, ``.opus``, ``.g722``, ``.gsm``).
        codec: ``"sndfile"`` (anything libsndfile reads), ``"g722"`` (raw G.722, 16 kHz, 64 kbit/s) or ``"gsm"``
            (raw GSM 6.10, 8 kHz).
        exclude: ``fnmatch`` patterns (relative to ``folder``) of files that are not speech (beeps, tones, silence).
        include: ``fnmatch`` patterns (relative to ``folder``); when given, only files matching one are kept (one
            character's lines in a folder of dialogs).
        artists: keep only files whose Vorbis/WAV ``artist`` tag is one of these (``""`` = untagged); ``None``
            keeps all.
        sample_rate: keep only files stored at this rate (the files of one recording session); ``None`` keeps all.
        channels: keep only files with this many channels (``None`` keeps all).
        voice: the person(s) the package credits for these recordings (``""``: not credited).
        evidence: where the attribution comes from.
        single_voice: the package attributes these files to exactly one named person (test candidates only).
        group: label shared with sources that may be the same, unattributed person (never in the test split).
        license_files: the DEP-5 ``Files:`` pattern of the package's ``copyright`` paragraph covering the clips.
        license_note: the license as stated, for packages whose ``copyright`` file is not DEP-5.
    """

    speaker: str
    session: str
    package: str
    folder: str
    suffix: str
    codec: str = "sndfile"
    exclude: tuple[str, ...] = ()
    artists: tuple[str, ...] | None = None
    sample_rate: int | None = None
    include: tuple[str, ...] = ()
    channels: int | None = None
    voice: str = ""
    evidence: str = ""
    single_voice: bool = False
    group: str | None = None
    license_files: str = "*"
    license_note: str = ""

    def __post_init__(self) -> None:
        if self.codec not in ("sndfile", "g722", "gsm"):
            raise ValueError(f"VoiceSource {self.speaker}/{self.session}: codec {self.codec!r} not in sndfile/g722/gsm")

    @property
    def key(self) -> str:
        return f"{self.speaker}/{self.session}"


_KL = "usr/share/klettres"
_KT = "usr/share/ktuberling/sounds"
_AST = "usr/share/asterisk/sounds"
_KL_DOC = "klettres-data index.docbook credits"
_KT_DOC = "ktuberling-data index.docbook credits"
_AST_CR = "asterisk-core-sounds copyright"
_AST_SKIP = ("silence/*", "*beep*", "*tone*")  # beeps, 2-tone signals and the silence/ clips are not speech


def _klettres(lang: str, voice: str = "", evidence: str = "", single: bool = False, group: str | None = None,
              sub: str = "") -> VoiceSource:
    return VoiceSource(
        f"klettres-{lang.lower().replace('_', '-')}", "klettres", "klettres-data", f"{_KL}/{lang}{sub}", ".ogg",
        voice=voice, evidence=evidence or f"{_KL_DOC}: not credited", single_voice=single, group=group,
    )


def _ktuberling(lang: str, name: str = "", voice: str = "", evidence: str = "", single: bool = False,
                group: str | None = None, artists: tuple[str, ...] | None = None, sample_rate: int | None = None,
                suffix: str = "") -> VoiceSource:
    spk = f"ktuberling-{lang}" + (f"-{name}" if name else "")
    return VoiceSource(
        spk, "ktuberling", "ktuberling-data", f"{_KT}/{lang}", suffix, artists=artists, sample_rate=sample_rate,
        voice=voice, evidence=evidence or f"{_KT_DOC}: not credited", single_voice=single, group=group,
    )


def _tag(lang: str, artist: str, n: int) -> str:
    return f"ktuberling-data {lang}/: Vorbis artist tag {artist!r} ({n} files)"


_TP = "tuxpaint-stamps-default"
_TP_DIR = "usr/share/tuxpaint/stamps"
_TP_DOC = "tuxpaint-stamps-default usr/share/doc/tuxpaint-stamps-default/changelog.gz"
_FN = "usr/share/games/fillets-ng/sound"
_FN_CREDITS = ("fillets-ng-data usr/share/games/fillets-ng/images/menu/credits.png, 'Voices & Animal sounds': ")
_FN_LICENSE = "GPL-2 (copyright: the game data under the GNU General Public License version 2)"


def _tuxpaint(lang: str, voice: str, quote: str, group: str | None = None, sample_rate: int | None = None,
              channels: int | None = None) -> VoiceSource:
    return VoiceSource(
        f"tuxpaint-{lang}", "tuxpaint", _TP, _TP_DIR, f"_desc_{lang}.ogg",
        exclude=("symbols/alphabets/*", "symbols/math/*"), sample_rate=sample_rate, channels=channels, voice=voice,
        evidence=f"{_TP_DOC}: {quote}", single_voice=group is None, group=group,
    )


SOURCES: tuple[VoiceSource, ...] = (
    # --- klettres-data: one folder per language (alpha/ = letters, syllab/ = syllables) -----------------------
    _klettres("ar"),
    _klettres("cs", "Eva Mikulčíková", f"{_KL_DOC}: 'Czech sounds'", True),
    _klettres("da", "Erik Kjaer Pedersen", f"{_KL_DOC}: 'Danish sounds'", True, group="da"),
    # de/alpha/ is spoken by a voice about an octave above de/syllab/ (median F0 ~215 Hz vs ~110 Hz), so the folder
    # holds two people; only syllab/ is used, credited to Helmut Kriege.
    _klettres("de", "Helmut Kriege", f"{_KL_DOC}: 'German sounds' (syllab/ only)", True, group="de", sub="/syllab"),
    _klettres("en", "Robert Wadley", f"{_KL_DOC}: 'English sounds'", True),
    _klettres("en_GB", "", f"{_KL_DOC}: British English is listed as its own language, no credit"),
    _klettres("es", "Ana Belén Caballero and Juan Pedro Paredes", f"{_KL_DOC}: 'Spanish sounds' (two people)",
              group="es"),
    _klettres("fr", "Ludovic Grossard", f"{_KL_DOC}: 'French sounds'", True, group="fr"),
    _klettres("he", "Assaf Gorgon", f"{_KL_DOC}: 'Hebrew sounds'", True),
    _klettres("hu"),
    _klettres("it", "Pietro Pasotti", f"{_KL_DOC}: 'Italian sounds'", True),
    _klettres("lt", "Liudas Ališauskas", "klettres-data: Vorbis 'artist' tag on all 102 files of lt/", True),
    _klettres("ml"),
    _klettres("nb", "Johnstad/Gabor", "klettres-data: Vorbis 'artist' tag 'Copyright 2007 Johnstad/Gabor' (two names)"),
    _klettres("nds", "Manfred Wiese and Sönke Dibbern", f"{_KL_DOC}: 'Low Saxon sounds' (two people)", group="nds"),
    _klettres("nl", "Geert Stams", f"{_KL_DOC}: 'Dutch sounds'", True, group="nl"),
    _klettres("pt_BR", "Lindonjohnson Monte (father) and Michelle Monte (son)",
              f"{_KL_DOC}: 'Brazilian Portuguese sounds' (two people)"),
    _klettres("ru", "Dashk0", "klettres-data: Vorbis 'artist' tag on all 94 files of ru/", True, group="ru"),
    _klettres("tn"),
    _klettres("uk", group="uk"),
    # --- ktuberling-data: one folder per language; ca/ and da/ hold several people, told apart by file tags ----
    _ktuberling("ca", "orestes", "Orestes", _tag("ca", "Orestes", 43), True, artists=("Orestes",)),
    _ktuberling("ca", "otger", "Otger Mas", _tag("ca", "Otger Mas", 62), True, artists=("Otger Mas",)),
    # 'Bernat' (21 files) and 'Bernat Mas' (18 files): the same first name in the same folder, same 22.05 kHz
    # session as the other Mas recordings -> one person.
    _ktuberling("ca", "bernat", "Bernat Mas", _tag("ca", "Bernat Mas", 18) + " and 'Bernat' on 21 files", True,
                artists=("Bernat Mas", "Bernat")),
    _ktuberling("ca", "eudald", "Eudald Lladó", _tag("ca", "Eudald Lladó", 14), True, artists=("Eudald Lladó",)),
    _ktuberling("ca", "marti", "Martí Mas", _tag("ca", "Martí Mas", 14), True, artists=("Martí Mas",)),
    _ktuberling("ca", "jaume", "Jaume Lladó", _tag("ca", "Jaume Lladó", 20), True, artists=("Jaume Lladó",)),
    _ktuberling("da", "martha", "Martha Schou", _tag("da", "Martha Schou", 40), True, artists=("Martha Schou",)),
    _ktuberling("da", "", "", "ktuberling-data: the 126 untagged files of da/ (no credit)", group="da", artists=("",)),
    _ktuberling("de", group="de"),
    _ktuberling("el", "", "clavisound.gr and patty", _tag("el", "clavisound.gr and patty", 74) + " (two names)"),
    _ktuberling("en", "", "John Calhoun", f"{_KT_DOC}: 'original pictures and English sounds'", True),
    # es/ and nl/: one file at another rate than the rest, i.e. from another session -> only the main session.
    _ktuberling("es", group="es", sample_rate=8000),
    _ktuberling("fi"),
    # fr/: 184 files re-encoded at 44.1 kHz (one session) plus 26 older files at 8 and 22.05 kHz -> main session.
    _ktuberling("fr", group="fr", sample_rate=44100),
    _ktuberling("ga"),
    _ktuberling("gl"),
    _ktuberling("it", "", "Clara Tattoni",
                "ktuberling-data: usr/share/doc/HTML/it/ktuberling/index.docbook 'Voce dell'edizione italiana'", True),
    _ktuberling("lt", "", "Donatas Glodenis", _tag("lt", "Donatas Glodenis", 167), True),
    _ktuberling("nds", group="nds"),
    _ktuberling("nl", group="nl", sample_rate=8000),
    _ktuberling("nn", "", "Karl Ove Hufthammer / Øystein Steffensen-Alværvik",
                _tag("nn", "Karl Ove Hufthammer / Øystein Steffensen-Alværvik", 190) + " (two names)"),
    _ktuberling("pt"),
    _ktuberling("ro", group="ro"),
    _ktuberling("ru", group="ru"),
    _ktuberling("sl"),
    # sr@ijekavian/, sr@ijekavianlatin/ and sr@latin/ are byte-identical copies of sr/ (same MD5 sums): one voice.
    _ktuberling("sr"),
    _ktuberling("sv"),
    _ktuberling("uk", group="uk"),
    _ktuberling("wa", "", "Djan Cayron", _tag("wa", "Djan Cayron", 74), True, artists=("Djan Cayron",)),
    # --- Asterisk prompts: professional voices; the folder names are <lang>_<COUNTRY>_<f|m>_<Name> -------------
    VoiceSource("asterisk-allison", "core-en", "asterisk-core-sounds-en-g722", f"{_AST}/en_US_f_Allison", ".g722",
                "g722", _AST_SKIP, voice="Allison Smith", single_voice=True,
                evidence=f"{_AST_CR}: 'Files: *' 'Recorded by: Allison Smith'; folder en_US_f_Allison"),
    VoiceSource("asterisk-allison", "core-es", "asterisk-core-sounds-es-g722", f"{_AST}/es_MX_f_Allison", ".g722",
                "g722", _AST_SKIP, voice="Allison Smith", single_voice=True,
                evidence=f"{_AST_CR}: 'Files: *' 'Recorded by: Allison Smith' (no es-* paragraph); "
                "folder es_MX_f_Allison"),
    VoiceSource("asterisk-june", "core-fr", "asterisk-core-sounds-fr-g722", f"{_AST}/fr_CA_f_June", ".g722", "g722",
                _AST_SKIP, voice="June Wallack", single_voice=True, license_files="fr-*",
                evidence=f"{_AST_CR}: 'Files: fr-*' 'Recorded by: June Wallack'; folder fr_CA_f_June"),
    VoiceSource("asterisk-carlo", "core-it", "asterisk-core-sounds-it-g722", f"{_AST}/it_IT_m_Carlo", ".g722", "g722",
                _AST_SKIP, voice="Carlo Flora", single_voice=True, license_files="it-*",
                evidence=f"{_AST_CR}: 'Files: it-*' 'Recorded by: Carlo Flora'; folder it_IT_m_Carlo"),
    VoiceSource("asterisk-ivrvoiceru", "core-ru", "asterisk-core-sounds-ru-g722", f"{_AST}/ru_RU_f_IvrvoiceRU", ".g722",
                "g722", _AST_SKIP, voice="the IvrvoiceRU voice (provided by Maxim Topal)", single_voice=True,
                license_files="ru-*",
                evidence=f"{_AST_CR}: 'Files: ru-*' 'Provided by: Maxim Topal, http://www.ivrvoice.ru'; "
                "folder ru_RU_f_IvrvoiceRU (one female voice)"),
    VoiceSource("asterisk-menardi", "prompt-it", "asterisk-prompt-it-menardi-gsm", f"{_AST}/it_IT_f_Menardi", ".gsm",
                "gsm", _AST_SKIP, voice="Paola Dal Zot", single_voice=True,
                evidence="asterisk-prompt-it-menardi-gsm: copyright 'Marco Menardi e Paola Dal Zot (?the voice?)'; "
                "folder it_IT_f_Menardi (female voice)"),
    VoiceSource("asterisk-es-co", "prompt-es", "asterisk-prompt-es-co", f"{_AST}/es", ".gsm", "gsm", _AST_SKIP,
                voice="July E. Jiménez", single_voice=True,
                evidence="asterisk-prompt-es-co: usr/share/doc/asterisk-prompt-es-co/LEEME "
                "'con la voz de July E. Jiménez'",
                license_note="GPL-2 (copyright: 'GNU General Public License ... version 2 dated June, 1991')"),
    VoiceSource("asterisk-armelle", "prompt-fr", "asterisk-prompt-fr-armelle", f"{_AST}/fr", ".gsm", "gsm", _AST_SKIP,
                voice="Armelle Desjardins", single_voice=True,
                evidence="asterisk-prompt-fr-armelle: copyright 'Voice actor: Armelle Desjardins'",
                license_note="BSD-style (copyright: '(C) 2006 Michel Gutierrez ... Redistribution and use, with or "
                "without modification, are permitted')"),
    # --- tuxpaint-stamps-default: spoken stamp descriptions, <stamp>_desc_<lang>.ogg, one voice per language -----
    # (symbols/alphabets/ and symbols/math/ hold letter and number sounds from Schoolsplay: other people.)
    _tuxpaint("ca", "Pere Pujal i Carabantes", "'Catalan spoken translations of all (almost all?) stamps! Pere Pujal "
              "Carabantes' (2009); the 44.1 kHz mono files only (a few 8 kHz and stereo files)", sample_rate=44100,
              channels=1),
    _tuxpaint("bg", "Krasimir Petkov", "'Descriptive sounds by GCI students ... Bulgarian: Krasimir Petkov'"),
    _tuxpaint("ro", "Tabbytha", "'Descriptive sounds by GCI students ... Romanian: Tabbytha'", group="ro"),
    _tuxpaint("be", "Kseniya Buraya", "'Belarusian ... Descriptive sounds by Kseniya Buraya'"),
    _tuxpaint("el", "Kiriaki Serafeim", "'Greek descriptive sounds Kiriaki SERAFEIM'"),
    _tuxpaint("fr", "PaulK", "'Descriptive sounds by GCI students ... French: PaulK'", group="fr"),
    _tuxpaint("es", "Estefanía Ortiz", "'Spanish translation ... Descriptive sounds Estefanía Ortiz'", group="es"),
    _tuxpaint("ru", "Edwin Veber", "'Descriptive sounds by GCI students ... Rusian: Edwin Veber'", group="ru"),
    _tuxpaint("da", "Joe Dalton", "'Danish descriptive sounds Joe Dalton'", group="da"),
    VoiceSource("tuxpaint-lt", "tuxpaint", _TP, f"{_TP_DIR}/symbols/alphabets/english", "_desc_lt.ogg",
                artists=("Andrius Jurkus",), voice="Andrius Jurkus", single_voice=True,
                evidence=f"{_TP} symbols/alphabets/english/: Vorbis artist tag 'Andrius Jurkus' on all 88 files (22 "
                "distinct); changelog 'Lithuanian: Andrius, Jurkus'"),
    # --- fillets-ng-data-cs: the Czech dialogs of Fish Fillets; <level>-v-* lines are the big fish's, -m- the small
    # fish's (script/*/dialogs_cs.lua: font_big / font_small); the 22.05 kHz files are the original recording
    # session (the 44.1 kHz ones belong to later levels).
    VoiceSource("fillets-cs-big-fish", "fillets", "fillets-ng-data-cs", _FN, ".ogg", include=("*/cs/*-v-*.ogg",),
                sample_rate=22050, voice="Vít Musil", single_voice=True, evidence=_FN_CREDITS + "Vít Musil, drawn "
                "with the big blue fish", license_note=_FN_LICENSE),
    VoiceSource("fillets-cs-small-fish", "fillets", "fillets-ng-data-cs", _FN, ".ogg", include=("*/cs/*-m-*.ogg",),
                sample_rate=22050, voice="Gabriela Pyšná", single_voice=True, evidence=_FN_CREDITS + "Gabriela "
                "Pyšná, drawn with the small orange fish", license_note=_FN_LICENSE),
    # fillets-ng-data-nl: the Dutch dialogs, nobody credited: one steady voice per fish (median F0 about 140 and
    # 225 Hz), Dutch like the uncredited KTuberling voice (group nl).
    VoiceSource("fillets-nl-big-fish", "fillets", "fillets-ng-data-nl", _FN, ".ogg", include=("*/nl/*-v-*.ogg",),
                evidence="fillets-ng-data-nl: not credited (the big fish's lines)", group="nl",
                license_note=_FN_LICENSE),
    VoiceSource("fillets-nl-small-fish", "fillets", "fillets-ng-data-nl", _FN, ".ogg", include=("*/nl/*-m-*.ogg",),
                evidence="fillets-ng-data-nl: not credited (the small fish's lines)", group="nl",
                license_note=_FN_LICENSE),
    # --- gcin-voice: Mandarin syllables, <zhuyin>/3.ogg a male voice, <zhuyin>/5.ogg a female one ---------------
    VoiceSource("gcin-male", "gcin", "gcin-voice", "usr/share/gcin-voice/ogg", ".ogg", include=("*/3.ogg",),
                evidence="gcin-voice copyright: 'Files: */3.ogg' 'Copyright: 2014 Edward Der-Hua Liu' (the copyright "
                "holder; the voice is not named)", license_files="*/3.ogg"),
    VoiceSource("gcin-female", "gcin", "gcin-voice", "usr/share/gcin-voice/ogg", ".ogg", include=("*/5.ogg",),
                voice="Chu Lo", single_voice=True, license_files="*/5.ogg",
                evidence="gcin-voice copyright: 'Files: */5.ogg' '聲優 ... (ChionMeilin with the vocal source from Chu "
                "Lo)'"),
)
"""Every recording session used, with the evidence for its speaker label (see the module docstring)."""

SPEAKER_MERGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # The English and the Spanish Asterisk core prompts are the same professional voice: the shared copyright file
    # credits Allison Smith for 'Files: *' and gives only fr-, ru- and it- their own paragraphs; the folders are
    # en_US_f_Allison and es_MX_f_Allison.
    ("asterisk-allison", ("asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722"),
     "copyright 'Files: *' 'Recorded by: Allison Smith' (en and es); folders en_US_f_Allison, es_MX_f_Allison"),
    # Two artist tags in ktuberling-data's ca/ folder name the same person.
    ("ktuberling-ca-bernat", ("ktuberling-data ca/ artist 'Bernat Mas'", "ktuberling-data ca/ artist 'Bernat'"),
     "same first name in the same folder and 22.05 kHz session as the other 'Mas' family recordings"),
    # The four Serbian folders of ktuberling-data are byte-identical copies (same MD5 sums): one voice, sr/ used.
    ("ktuberling-sr", ("ktuberling-data sr/", "sr@ijekavian/", "sr@ijekavianlatin/", "sr@latin/"),
     "identical files (MD5) in the four folders"),
)
"""Labels that name the same person: ``(speaker, merged labels, evidence)``."""

SAME_LANGUAGE_PAIRS: tuple[tuple[str, str, str, str], ...] = (
    # (source a, source b, decision, evidence) for every language that two packages record.
    ("klettres-en", "ktuberling-en", "different", "credits: Robert Wadley (KLettres) vs John Calhoun (KTuberling)"),
    ("klettres-it", "ktuberling-it", "different", "credits: Pietro Pasotti (KLettres) vs Clara Tattoni (KTuberling)"),
    ("klettres-lt", "ktuberling-lt", "different", "artist tags: Liudas Ališauskas vs Donatas Glodenis"),
    ("klettres-da", "ktuberling-da-martha", "different", "credit Erik Kjaer Pedersen vs artist tag Martha Schou"),
    ("klettres-da", "ktuberling-da", "unknown", "untagged KTuberling files: kept together in train (group da)"),
    ("klettres-de", "ktuberling-de", "unknown", "KTuberling's German voice is not credited (group de)"),
    ("klettres-es", "ktuberling-es", "unknown", "KTuberling's Spanish voice is not credited (group es)"),
    ("klettres-fr", "ktuberling-fr", "unknown", "KTuberling's French voice is not credited (group fr)"),
    ("klettres-nds", "ktuberling-nds", "unknown", "KTuberling's Low Saxon voice is not credited (group nds)"),
    ("klettres-nl", "ktuberling-nl", "unknown", "KTuberling's Dutch voice is not credited (group nl)"),
    ("klettres-ru", "ktuberling-ru", "unknown", "KTuberling's Russian voice is not credited (group ru)"),
    ("klettres-uk", "ktuberling-uk", "unknown", "neither Ukrainian voice is credited (group uk)"),
    ("asterisk-june", "asterisk-armelle", "different", "June Wallack vs Armelle Desjardins"),
    ("asterisk-carlo", "asterisk-menardi", "different", "Carlo Flora (m) vs Paola Dal Zot (f)"),
    ("asterisk-allison", "asterisk-es-co", "different", "Allison Smith vs July E. Jiménez"),
    ("tuxpaint-fr", "ktuberling-fr", "unknown", "KTuberling's French voice is not credited (group fr)"),
    ("tuxpaint-es", "ktuberling-es", "unknown", "KTuberling's Spanish voice is not credited (group es)"),
    ("tuxpaint-ru", "ktuberling-ru", "unknown", "KTuberling's Russian voice is not credited (group ru)"),
    ("tuxpaint-da", "ktuberling-da", "unknown", "KTuberling's untagged Danish files are not credited (group da)"),
    ("tuxpaint-fr", "klettres-fr", "different", "credits: PaulK (Tux Paint) vs Ludovic Grossard (KLettres)"),
    ("tuxpaint-es", "klettres-es", "different", "credits: Estefanía Ortiz vs Ana Belén Caballero and Juan Pedro "
     "Paredes"),
    ("tuxpaint-ru", "klettres-ru", "different", "credits: Edwin Veber vs Dashk0"),
    ("tuxpaint-da", "klettres-da", "different", "credits: Joe Dalton vs Erik Kjaer Pedersen"),
    ("tuxpaint-da", "ktuberling-da-martha", "different", "credit Joe Dalton vs artist tag Martha Schou"),
    ("tuxpaint-ca", "ktuberling-ca-*", "different", "credit Pere Pujal i Carabantes vs the six tagged KTuberling "
     "voices"),
    ("tuxpaint-lt", "klettres-lt", "different", "artist tags: Andrius Jurkus vs Liudas Ališauskas"),
    ("tuxpaint-lt", "ktuberling-lt", "different", "artist tags: Andrius Jurkus vs Donatas Glodenis"),
    ("tuxpaint-el", "ktuberling-el", "different", "credit Kiriaki Serafeim vs tag 'clavisound.gr and patty'"),
    ("tuxpaint-ro", "ktuberling-ro", "unknown", "KTuberling's Romanian voice is not credited (group ro)"),
    ("fillets-cs-big-fish", "klettres-cs", "different", "credits: Vít Musil vs Eva Mikulčíková"),
    ("fillets-cs-small-fish", "klettres-cs", "different", "credits: Gabriela Pyšná vs Eva Mikulčíková"),
    ("fillets-nl-big-fish", "ktuberling-nl", "unknown", "neither Dutch voice is credited (group nl)"),
    ("fillets-nl-small-fish", "ktuberling-nl", "unknown", "neither Dutch voice is credited (group nl)"),
    ("fillets-nl-big-fish", "klettres-nl", "unknown", "the fish are not credited; KLettres' is Geert Stams (group nl)"),
    ("fillets-nl-small-fish", "klettres-nl", "unknown", "the fish are not credited; KLettres' is Geert Stams (group "
     "nl)"),
)
"""Same-language voices in different packages and what the packages say about them."""


def demo_packages() -> list[str]:
    """The Debian packages the demo corpus is built from, in :data:`SOURCES` order."""
    return list(dict.fromkeys(s.package for s in SOURCES))


# ---------------------------------------------------------------------------------------------------------------
# configuration and summary
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCorpusConfig:
    """How the demo corpus is cut (every field is part of the cache key)."""

    n_test_speakers: int = 16
    """speakers in the test split (drawn from the single-voice, ungrouped candidates)."""
    min_utterance_seconds: float = 4.0
    """speech (pauses excluded) per utterance at least."""
    min_clips_per_utterance: int = 3
    """clips per utterance at least."""
    max_seconds_per_speaker: float = 60.0
    """speech decoded per speaker at most (split evenly over the speaker's sessions)."""
    min_utterances_per_speaker: int = 3
    """speakers with fewer utterances are dropped."""
    min_test_utterances: int = 6
    """a test candidate needs at least this many utterances (for target trials)."""
    clip_seconds: tuple[float, float] = (0.3, 3.0)
    """(shortest, longest) silence-trimmed clip kept, in seconds."""
    gap_seconds: float = 0.1
    """silence inserted between concatenated clips."""

    def __post_init__(self) -> None:
        checks = {
            "n_test_speakers": self.n_test_speakers >= 2,
            "min_utterance_seconds": self.min_utterance_seconds > 0,
            "min_clips_per_utterance": self.min_clips_per_utterance >= 1,
            "max_seconds_per_speaker": self.max_seconds_per_speaker >= self.min_utterance_seconds,
            "min_utterances_per_speaker": self.min_utterances_per_speaker >= 1,
            "min_test_utterances": self.min_test_utterances >= 2,
            "clip_seconds": 0 < self.clip_seconds[0] < self.clip_seconds[1],
            "gap_seconds": self.gap_seconds >= 0,
        }
        allowed = {
            "n_test_speakers": ">= 2",
            "min_utterance_seconds": "> 0",
            "min_clips_per_utterance": ">= 1",
            "max_seconds_per_speaker": ">= min_utterance_seconds",
            "min_utterances_per_speaker": ">= 1",
            "min_test_utterances": ">= 2 (a target trial needs two utterances)",
            "clip_seconds": "0 < shortest < longest",
            "gap_seconds": ">= 0",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"DemoCorpusConfig.{name} = {getattr(self, name)!r}; expected {allowed[name]}")


@dataclass(frozen=True)
class SplitSummary:
    """Size of one split: speakers, utterances and minutes of audio (pauses included)."""

    speakers: int
    utterances: int
    minutes: float


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`build_demo_corpus` built (or found cached) under ``root``.

    ``train_dir``, ``test_dir`` (Kaldi data directories), ``trials`` (Kaldi trial list) and ``readme`` are paths
    inside ``root`` (= ``<data root>/demo``).
    """

    root: str
    train: SplitSummary
    test: SplitSummary
    target_trials: int
    nontarget_trials: int
    seed: int
    build_seconds: float
    """wall time of the build that made the corpus (not of a cached call)."""

    @property
    def speakers(self) -> int:
        return self.train.speakers + self.test.speakers

    @property
    def train_dir(self) -> Path:
        return Path(self.root) / "train"

    @property
    def test_dir(self) -> Path:
        return Path(self.root) / "test"

    @property
    def trials(self) -> Path:
        return Path(self.root) / "trials.txt"

    @property
    def readme(self) -> Path:
        return Path(self.root) / "README.md"

    def to_dict(self) -> dict:
        """JSON-friendly dict (splits nested, paths included)."""
        out = asdict(self)
        out.update(speakers=self.speakers, train_dir=str(self.train_dir), test_dir=str(self.test_dir),
                   trials=str(self.trials), readme=str(self.readme))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> CorpusSummary:
        return cls(d["root"], SplitSummary(**d["train"]), SplitSummary(**d["test"]), int(d["target_trials"]),
                   int(d["nontarget_trials"]), int(d["seed"]), float(d["build_seconds"]))


# ---------------------------------------------------------------------------------------------------------------
# small pure steps
# ---------------------------------------------------------------------------------------------------------------


def decode_clip(path: str | os.PathLike, codec: str = "sndfile", sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Decode one clip, trim leading/trailing silence and resample: float32 ``(num_samples,)`` at ``sample_rate``.

    ``codec``: ``"sndfile"`` (Ogg Vorbis/Opus, WAV, FLAC, ...; falls back to ``sox`` when libsndfile cannot read
    the file and ``sox`` is installed), ``"g722"`` (raw G.722 at 16 kHz, 64 kbit/s, via the ``G722`` package) or
    ``"gsm"`` (raw GSM 6.10 at 8 kHz, via libsndfile's RAW reader).

    Raises:
        AudioError: unreadable, empty or non-finite audio (the message names the file).
    """
    path = Path(path)
    try:
        if codec == "g722":
            import G722  # PyPI package G722 (C extension); imported lazily: only the Asterisk sources need it

            pcm = np.asarray(G722.G722(16000, 64000).decode(path.read_bytes()), dtype=np.float32) / 32768.0
            data, sr = pcm, 16000
        elif codec == "gsm":
            data, sr = sf.read(str(path), format="RAW", subtype="GSM610", samplerate=8000, channels=1, dtype="float32")
        elif codec == "sndfile":
            data, sr = _read_sndfile_or_sox(path)
        else:
            raise ValueError(f"unknown codec {codec!r}; expected 'sndfile', 'g722' or 'gsm'")
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode as {codec} ({err})") from err
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.size == 0 or not np.isfinite(data).all():
        raise AudioError(f"{path}: empty or non-finite audio after decoding as {codec} (expected speech samples)")
    # trim at the file's rate first: less audio to resample
    wav = _trim_silence(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), int(sr))
    if int(sr) == sample_rate:
        return wav.contiguous()
    return _resampler(int(sr), sample_rate)(wav).contiguous()


@functools.lru_cache(maxsize=8)
def _resampler(orig_sr: int, new_sr: int) -> torchaudio.transforms.Resample:
    """torchaudio's sinc resampler with its kernel cached (same defaults as :func:`svlib.frontend.audio.resample`)."""
    return torchaudio.transforms.Resample(orig_sr, new_sr)


def _read_sndfile_or_sox(path: Path) -> tuple[np.ndarray, int]:
    try:
        return sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        sox = shutil.which("sox")
        if sox is None:
            raise RuntimeError(f"libsndfile cannot read it ({err}) and sox is not installed") from err
        result = subprocess.run([sox, str(path), "-t", "raw", "-e", "float", "-b", "32", "-c", "1", "-r",
                                 str(SAMPLE_RATE), "-"], capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"sox failed: {result.stderr.decode(errors='replace').strip()}") from err
        return np.frombuffer(result.stdout, dtype=np.float32).copy(), SAMPLE_RATE


def pack_clips(durations: Sequence[float], min_seconds: float, min_clips: int) -> list[list[int]]:
    """Group consecutive clips into utterances: each group has at least ``min_clips`` clips and ``min_seconds`` of
    speech; the clips left over at the end join the last group (or are dropped if there is no group).

    Args:
        durations: clip durations in seconds, in the order they will be concatenated.
    Returns:
        lists of clip indices, e.g. ``pack_clips([2, 2, 1, 3, 1], 4.0, 2)`` -> ``[[0, 1], [2, 3, 4]]``.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for i, d in enumerate(durations):
        current.append(i)
        total += d
        if len(current) >= min_clips and total >= min_seconds:
            groups.append(current)
            current, total = [], 0.0
    if current and groups:
        groups[-1].extend(current)
    return groups


@dataclass(frozen=True)
class SpeakerInfo:
    """What :func:`split_speakers` needs to know about a speaker (see :class:`VoiceSource` for the fields)."""

    speaker: str
    n_utterances: int
    single_voice: bool
    group: str | None


def split_speakers(speakers: Sequence[SpeakerInfo], n_test: int, min_test_utterances: int, seed: int
                   ) -> tuple[list[str], list[str]]:
    """Split speakers into disjoint ``(train, test)`` lists (sorted); ``test`` has ``n_test`` speakers drawn with
    ``seed`` from the candidates: single credited voice, no ``group``, at least ``min_test_utterances``.

    Raises:
        ValueError: fewer candidates than ``n_test`` (the message lists the candidates).
    """
    candidates = sorted(s.speaker for s in speakers
                        if s.single_voice and s.group is None and s.n_utterances >= min_test_utterances)
    if len(candidates) < n_test:
        raise ValueError(f"only {len(candidates)} test candidates {candidates}, n_test_speakers = {n_test}; "
                         "lower n_test_speakers or min_test_utterances")
    test = sorted(random.Random(seed).sample(candidates, n_test))
    train = sorted(s.speaker for s in speakers if s.speaker not in set(test))
    return train, test


def make_trials(utt2spk: dict[str, str], seed: int, max_target_trials: int | None = None) -> list[Trial]:
    """A balanced trial list: every same-speaker pair (at most ``max_target_trials``, drawn with ``seed``) as target
    trials and as many different-speaker pairs, drawn uniformly without repetition, as nontarget trials.

    Pairs are ``(enroll, test)`` with ``enroll < test``; the list is sorted by ``(enroll, test)``.
    """
    rng = random.Random(seed)
    utts = sorted(utt2spk)
    by_spk: dict[str, list[str]] = {}
    for u in utts:
        by_spk.setdefault(utt2spk[u], []).append(u)
    targets = [(a, b) for us in by_spk.values() for i, a in enumerate(us) for b in us[i + 1:]]
    if max_target_trials is not None and len(targets) > max_target_trials:
        targets = sorted(rng.sample(targets, max_target_trials))
    n_cross = (len(utts) * (len(utts) - 1)) // 2 - sum(len(us) * (len(us) - 1) // 2 for us in by_spk.values())
    if n_cross < len(targets):
        raise ValueError(f"only {n_cross} different-speaker pairs for {len(targets)} target trials")
    nontargets: set[tuple[str, str]] = set()
    while len(nontargets) < len(targets):
        a, b = rng.sample(utts, 2)
        if utt2spk[a] != utt2spk[b]:
            nontargets.add((min(a, b), max(a, b)))
    trials = [Trial(a, b, True) for a, b in targets] + [Trial(a, b, False) for a, b in nontargets]
    return sorted(trials, key=lambda t: (t.enroll, t.test))


# ---------------------------------------------------------------------------------------------------------------
# building one recording session (runs in worker processes)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SessionTask:
    source: VoiceSource
    package_dir: str
    work_dir: str      # where the wav files are written now
    final_dir: str     # where they will be after the build (paths in wav.scp)
    seed: int
    budget_seconds: float
    config: DemoCorpusConfig


@dataclass
class _SessionResult:
    key: str
    utterances: list[tuple[str, str, float]] = field(default_factory=list)  # (utt id, final path, seconds)
    n_files: int = 0
    n_clips: int = 0
    n_skipped: int = 0


def _tag_artist(path: str) -> str:
    with sf.SoundFile(path) as f:
        return f.copy_metadata().get("artist", "").strip()


def _list_clips(source: VoiceSource, package_dir: Path) -> list[Path]:
    """The clip files of a source, sorted, filtered by suffix/exclude/include/artist/rate/channels, duplicates (same
    bytes) removed."""
    folder = package_dir / source.folder
    if not folder.is_dir():
        raise FileNotFoundError(f"{source.key}: {folder} not found in package {source.package} (expected clips there)")
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not follow symbolic links
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink() or (source.suffix and not name.endswith(source.suffix)):
                continue
            if path.stat().st_size == 0:  # e.g. ru_RU_f_IvrvoiceRU/is.g722 is an empty file in the package
                logger.debug("skipping empty file %s", path)
                continue
            if any(fnmatch.fnmatch(rel, pat) for pat in source.exclude):
                continue
            if source.include and not any(fnmatch.fnmatch(rel, pat) for pat in source.include):
                continue
            files.append(path)
    if source.artists is not None:
        files = [f for f in files if _tag_artist(str(f)) in source.artists]
    if source.sample_rate is not None:
        files = [f for f in files if sf.info(str(f)).samplerate == source.sample_rate]
    if source.channels is not None:
        files = [f for f in files if sf.info(str(f)).channels == source.channels]
    seen: set[str] = set()
    unique = []
    for f in files:
        digest = hashlib.md5(f.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(f)
    return unique


def _build_session(task: _SessionTask) -> _SessionResult:
    """Decode, pack and write the utterances of one recording session."""
    torch.set_num_threads(1)
    src, cfg = task.source, task.config
    files = _list_clips(src, Path(task.package_dir))
    random.Random(f"{task.seed}/{src.key}").shuffle(files)
    result = _SessionResult(src.key, n_files=len(files))
    clips: list[torch.Tensor] = []
    speech = 0.0
    for f in files:
        if speech >= task.budget_seconds:
            break
        try:
            wav = decode_clip(f, src.codec)
        except AudioError as err:
            logger.warning("skipping %s", err)
            result.n_skipped += 1
            continue
        seconds = wav.shape[0] / SAMPLE_RATE
        if not cfg.clip_seconds[0] <= seconds <= cfg.clip_seconds[1]:
            result.n_skipped += 1
            continue
        clips.append(wav)
        speech += seconds
    result.n_clips = len(clips)
    durations = [c.shape[0] / SAMPLE_RATE for c in clips]
    groups = pack_clips(durations, cfg.min_utterance_seconds, cfg.min_clips_per_utterance)
    gap = torch.zeros(int(round(cfg.gap_seconds * SAMPLE_RATE)))
    for n, group in enumerate(groups, start=1):
        pieces: list[torch.Tensor] = []
        for j, i in enumerate(group):
            if j:
                pieces.append(gap)
            pieces.append(clips[i])
        wav = torch.cat(pieces)
        peak = float(wav.abs().max())
        if peak > 0.99:  # keep the 16-bit file unclipped
            wav = wav * (0.99 / peak)
        rel = f"{src.speaker}/{src.session}/{n:05d}"
        save_audio(Path(task.work_dir) / "wav" / f"{rel}.wav", wav, SAMPLE_RATE, subtype="PCM_16")
        result.utterances.append((rel, str(Path(task.final_dir) / "wav" / f"{rel}.wav"), wav.shape[0] / SAMPLE_RATE))
    return result


# ---------------------------------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------------------------------


def _cache_key(seed: int, config: DemoCorpusConfig) -> dict:
    return {"recipe": DEMO_RECIPE_VERSION, "seed": seed, "config": asdict(config)}


def _cached(demo: Path, key: dict) -> CorpusSummary | None:
    marker, summary = demo / _MARKER, demo / "summary.json"
    if not (marker.is_file() and summary.is_file()):
        return None
    try:
        stored = json.loads(marker.read_text())
        if json.loads(json.dumps(key)) != stored:  # tuples -> lists, as stored
            logger.info("%s was built with %s; rebuilding for %s", demo, stored, key)
            return None
        result = CorpusSummary.from_dict(json.loads(summary.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring unreadable cache marker in %s (%s); rebuilding", demo, err)
        return None
    if Path(result.root) != demo.resolve():
        logger.info("%s was built at %s (paths in wav.scp would be wrong); rebuilding", demo, result.root)
        return None
    return result


def _fetch_all(root: Path, progress: bool) -> dict[str, Path]:
    """Fetch every package: the first alone (it may run ``apt-get update``), the others 4 at a time (network-bound)."""
    packages = demo_packages()
    dirs = {}
    with progress_bar(total=len(packages), desc="demo corpus: packages", unit="pkg", enabled=progress) as bar:
        try:
            dirs[packages[0]] = fetch_debian_package(packages[0], root)
            bar.update()
            rest = packages[1:]
            with ThreadPoolExecutor(4) as pool:
                for name, path in zip(rest, pool.map(lambda n: fetch_debian_package(n, root), rest), strict=True):
                    dirs[name] = path
                    bar.update()
        except RuntimeError as err:
            raise RuntimeError(
                f"cannot build the demo corpus: {err}\n"
                f"The demo corpus needs these packages from Debian main: {', '.join(packages)}. Where apt-get is "
                f"unavailable, download each .deb from https://packages.debian.org and unpack it with "
                f"'dpkg -x <file>.deb {root / 'pkgs'}/<name>' (then create the empty file "
                f"{root / 'pkgs'}/<name>/.svlib-extracted), or copy a finished {root / 'demo'} folder built by "
                "'svlib data demo' on a Debian/Ubuntu machine into the same path."
            ) from err
    return dirs


def build_demo_corpus(
    root: str | os.PathLike | None = None,
    seed: int = 0,
    config: DemoCorpusConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> CorpusSummary:
    """Build (or return the cached) offline demo corpus under ``<root>/demo``; see the module docstring.

    Args:
        root: data root (default :func:`svlib.core.paths.default_data_root`); packages go to ``root/debs`` and
            ``root/pkgs``, the corpus to ``root/demo``.
        seed: fixes clip order, the speaker split and the trials.
        config: corpus cut (default :class:`DemoCorpusConfig`).
        workers: decoding processes (default: ``min(4, cpu count)``; ``1`` decodes in this process).
        progress: show tqdm progress bars.

    Writes ``root/demo/{train,test}/`` (Kaldi data directories with ``utt2dur``), ``trials.txt`` (Kaldi format,
    ``enroll test target|nontarget``), ``speakers.json``, ``README.md``, ``summary.json`` and a finished marker.

    Raises:
        RuntimeError: a package cannot be fetched (no apt-get, no network); the message says what to do.
    """
    config = config or DemoCorpusConfig()
    root = Path(root) if root is not None else default_data_root()
    root.mkdir(parents=True, exist_ok=True)
    demo = root / "demo"
    key = _cache_key(seed, config)
    cached = _cached(demo, key)
    if cached is not None:
        return cached
    with file_lock(root / ".demo.lock"):
        cached = _cached(demo, key)  # another process may have finished it while we waited
        if cached is not None:
            return cached
        start = time.perf_counter()
        summary = _build(root, demo, seed, config, workers, progress, start)
    logger.info("built the demo corpus in %.1f s: %s", summary.build_seconds, summary.to_dict())
    return summary


def _run_sessions(tasks: list[_SessionTask], workers: int, progress: bool) -> list[_SessionResult]:
    bar = progress_bar(total=len(tasks), desc="demo corpus: voices", unit="session", enabled=progress)
    results = []
    try:
        if workers <= 1:
            for t in tasks:
                results.append(_build_session(t))
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn, not fork: forking a process whose torch/OpenMP threads are running can deadlock the child
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_build_session, t) for t in tasks]
                for fut in as_completed(futures):
                    results.append(fut.result())
                    bar.update()
    finally:
        bar.close()
    order = {t.source.key: i for i, t in enumerate(tasks)}
    return sorted(results, key=lambda r: order[r.key])


def _build(root: Path, demo: Path, seed: int, config: DemoCorpusConfig, workers: int | None, progress: bool,
           start: float) -> CorpusSummary:
    package_dirs = _fetch_all(root, progress)
    work = root / "demo.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    final = demo.resolve()
    # 1. every session decodes up to its share of its speaker's speech budget
    n_sessions: dict[str, int] = {}
    for s in SOURCES:
        n_sessions[s.speaker] = n_sessions.get(s.speaker, 0) + 1
    tasks = [
        _SessionTask(s, str(package_dirs[s.package]), str(work), str(final), seed,
                     config.max_seconds_per_speaker / n_sessions[s.speaker], config)
        for s in SOURCES
    ]
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    results = _run_sessions(tasks, workers, progress)
    # 2. collect utterances per speaker; drop speakers with too few
    by_source = {s.key: s for s in SOURCES}
    entries: dict[str, list[tuple[str, str, float]]] = {}
    for r in results:
        entries.setdefault(by_source[r.key].speaker, []).extend(r.utterances)
        logger.info("%s: %d files, %d clips used, %d skipped, %d utterances", r.key, r.n_files, r.n_clips,
                    r.n_skipped, len(r.utterances))
    dropped = sorted(spk for spk, utts in entries.items() if len(utts) < config.min_utterances_per_speaker)
    for spk in dropped:
        logger.info("dropping %s: %d utterances < %d", spk, len(entries[spk]), config.min_utterances_per_speaker)
        shutil.rmtree(work / "wav" / spk, ignore_errors=True)
        del entries[spk]
    # 3. speaker-disjoint split
    info = []
    for spk, utts in sorted(entries.items()):
        srcs = [s for s in SOURCES if s.speaker == spk]
        info.append(SpeakerInfo(spk, len(utts), all(s.single_voice for s in srcs),
                                 next((s.group for s in srcs if s.group), None)))
    train_spk, test_spk = split_speakers(info, config.n_test_speakers, config.min_test_utterances, seed)
    splits: dict[str, DataDir] = {}
    for name, spks in (("train", train_spk), ("test", test_spk)):
        rows = [(u, spk, p, d) for spk in spks for (u, p, d) in entries[spk]]
        splits[name] = DataDir.from_entries(((u, s, p) for u, s, p, _ in rows), {u: d for u, _, _, d in rows},
                                            source=str(final / name))
        write_data_dir(splits[name], work / name)
    # 4. trials over the test split
    trials = TrialList(make_trials(splits["test"].utt2spk, seed), name="demo")
    trials.check(splits["test"])
    write_trials(trials, work / "trials.txt", fmt="kaldi")
    summary = CorpusSummary(
        str(final),
        *(SplitSummary(len(d.speakers), len(d), round((d.total_seconds() or 0.0) / 60, 2))
          for d in (splits["train"], splits["test"])),
        trials.n_target, trials.n_nontarget, seed, 0.0,
    )
    speakers_table = _speaker_table(entries, train_spk, test_spk, dropped)
    write_lines_atomic(work / "speakers.json", [json.dumps(speakers_table, indent=1, ensure_ascii=False)])
    write_lines_atomic(work / "README.md", _readme(summary, package_dirs, speakers_table, config))
    # 5. move into place, then mark finished
    summary = replace(summary, build_seconds=round(time.perf_counter() - start, 1))
    write_lines_atomic(work / "summary.json", [json.dumps(summary.to_dict(), indent=1)])
    shutil.rmtree(demo, ignore_errors=True)
    work.rename(demo)
    write_lines_atomic(demo / _MARKER, [json.dumps(_cache_key(seed, config))])
    return summary


def _speaker_table(entries: dict[str, list[tuple[str, str, float]]], train: list[str], test: list[str],
                   dropped: list[str]) -> list[dict]:
    rows = []
    for spk in dict.fromkeys(s.speaker for s in SOURCES):
        srcs = [s for s in SOURCES if s.speaker == spk]
        utts = entries.get(spk, [])
        rows.append({
            "speaker": spk,
            "split": "test" if spk in test else "train" if spk in train else "dropped",
            "utterances": len(utts),
            "minutes": round(sum(d for _, _, d in utts) / 60, 2),
            "packages": list(dict.fromkeys(s.package for s in srcs)),
            "sessions": [s.session for s in srcs],
            "voice": srcs[0].voice,
            "single_voice": all(s.single_voice for s in srcs),
            "group": next((s.group for s in srcs if s.group), None),
            "evidence": [s.evidence for s in srcs],
        })
    return rows


def _license(source: VoiceSource, package_dir: Path) -> str:
    stanza = copyright_stanza(package_dir, source.license_files)
    if stanza and stanza.get("License"):
        return stanza["License"]
    return source.license_note or "see the copyright file"


def _readme(summary: CorpusSummary, package_dirs: dict[str, Path], speakers: list[dict],
            config: DemoCorpusConfig) -> list[str]:
    """The corpus README (Markdown lines)."""
    lines = [
        "# svlib demo corpus",
        "",
        "Real human speech from Debian `main` packages, built by `svlib data demo` "
        f"(`svlib.data.demo.build_demo_corpus`, recipe version {DEMO_RECIPE_VERSION}, seed {summary.seed}).",
        "Clips were silence-trimmed, resampled to 16 kHz and concatenated (at least "
        f"{config.min_clips_per_utterance} clips and {config.min_utterance_seconds:g} s of speech, "
        f"{config.gap_seconds:g} s pauses) into 16-bit WAV utterances `wav/<spk>/<session>/<nnnnn>.wav`.",
        "",
        "| split | speakers | utterances | minutes |",
        "|---|---:|---:|---:|",
        f"| train | {summary.train.speakers} | {summary.train.utterances} | {summary.train.minutes} |",
        f"| test | {summary.test.speakers} | {summary.test.utterances} | {summary.test.minutes} |",
        "",
        f"`trials.txt` (Kaldi format `enroll test target|nontarget`): {summary.target_trials} target and "
        f"{summary.nontarget_trials} nontarget trials over the test split.",
        "",
        "## Source packages",
        "",
        "| package | version | license (from /usr/share/doc/<package>/copyright) | speakers |",
        "|---|---|---|---|",
    ]
    for pkg, pdir in package_dirs.items():
        srcs = [s for s in SOURCES if s.package == pkg]
        licenses = sorted({_license(s, pdir) for s in srcs})
        spks = [r["speaker"] + ("" if r["split"] != "dropped" else " (dropped)") for r in speakers
                if pkg in r["packages"]]
        lines.append(f"| {pkg} | {debian_package_version(pdir)} | {'; '.join(licenses)} | {', '.join(spks)} |")
    lines += [
        "",
        "## Speakers",
        "",
        "| speaker | split | utterances | minutes | credited voice | evidence |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in speakers:
        lines.append(f"| {r['speaker']} | {r['split']} | {r['utterances']} | {r['minutes']} | {r['voice'] or '—'} | "
                     f"{'; '.join(dict.fromkeys(r['evidence']))} |")
    lines += ["", "## Merged labels", "", "| speaker | merged | evidence |", "|---|---|---|"]
    lines += [f"| {spk} | {', '.join(parts)} | {ev} |" for spk, parts, ev in SPEAKER_MERGES]
    lines += ["", "## Same-language voices in two packages", "", "| a | b | decision | evidence |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {d} | {ev} |" for a, b, d, ev in SAME_LANGUAGE_PAIRS]
    lines += [
        "",
        "Voices of one language whose identity the packages leave open share a group and are kept in the training "
        "split; test speakers are voices that their package attributes to exactly one named person.",
    ]
    return lines
